"""Runtime settings: how a run uses this machine, never what it computes.

Worker counts, where training frames live, the renderer and the resume cache change how fast a stage runs but
not one byte of its outputs (each is tested), so they are not DVC params: changing them must not rerun a stage.
They come from environment variables ``WM_<NAME>`` (e.g. ``WM_WORKERS=8 dvc repro``) or from an untracked
``local.env`` file in the working directory holding the same ``WM_<NAME>=value`` lines; the environment wins.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wm.errors import WmError

LOCAL_ENV = "local.env"


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class RuntimeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WM_", env_file=LOCAL_ENV, extra="forbid", frozen=True)

    workers: int = Field(
        0,
        ge=0,
        le=4096,
        description="Workers for the real game (collect, real-game CMA-ES, evaluate); 0 or 'auto' = one per "
        "available core (with backend ray: per CPU of the Ray cluster). Outputs are byte-identical for any value.",
    )
    backend: Literal["processes", "ray"] = Field(
        "processes",
        description="Where the real-game workers run: local processes, or Ray actors on the cluster that "
        "RAY_ADDRESS names (Ray started on this machine when it is unset). Outputs are byte-identical either way.",
    )
    load_limit_gb: float = Field(
        8.0,
        ge=0.0,
        description="VAE training frames up to this size are loaded into (GPU) memory, larger datasets are "
        "streamed from HDF5; the batches are the same either way.",
    )
    fast_env: bool = Field(
        True, description="Use the pixel-identical fast CarRacing renderer (wm/envs/fast_car_racing.py)."
    )
    cache_dir: Path = Field(
        Path(".cache/wm"),
        description="Resume checkpoints of interrupted or extendable training runs, keyed by their params "
        "(ignored by git and DVC; delete it to reclaim space).",
    )
    progress: bool = Field(True, description="Show progress bars.")

    @field_validator("workers", mode="before")
    @classmethod
    def _auto(cls, value: object) -> object:
        return 0 if isinstance(value, str) and value.strip().lower() == "auto" else value

    @property
    def num_workers(self) -> int:
        """Local worker processes (the Ray backend counts the cluster's CPUs instead: wm.parallel.open_pool)."""
        return self.workers or available_cores()


@functools.cache
def load_runtime() -> RuntimeSettings:
    """The settings of this process (read once); a bad value is a WmError naming the variable."""
    try:
        return RuntimeSettings()
    except ValidationError as err:
        lines = []
        for e in err.errors():
            name = ".".join(str(p) for p in e["loc"]).upper()
            name = name if name.startswith("WM_") else f"WM_{name}"  # local.env keys arrive with the prefix
            msg = "unknown setting" if e["type"] == "extra_forbidden" else e["msg"]
            lines.append(f"{name} (environment or {LOCAL_ENV}): {msg}")
        raise WmError("\n".join(lines)) from None


def resolve_device(name: str):
    """The torch device of params' `device`: auto = CUDA when torch sees a GPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise WmError("device: cuda requested but torch sees no GPU (set device: auto or cpu in params.yaml)")
    return torch.device(name)
