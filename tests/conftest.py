"""Shared fixtures: a tiny configuration that exercises every stage in seconds."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from wm.config import WorldModelAgentConfig
from wm.runtime import load_runtime

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
REPO = Path(__file__).resolve().parents[1]
# Runtime settings of the whole session (module-scoped fixtures run before the per-test ones below): one
# worker (in-process, fast for tiny runs), no progress bars, resume checkpoints outside the repository.
os.environ.update(WM_WORKERS="1", WM_PROGRESS="false", WM_CACHE_DIR=tempfile.mkdtemp(prefix="wm-test-cache-"))
# The tests' models are tiny: one torch thread is several times faster than many on 2 busy cores (measured:
# 7 s instead of 24 s for the world model's dynamics test), as in the pipeline's worker processes.
torch.set_num_threads(1)
# Frames of `frames_h5`: frame i encodes i in pixel (0, 0) (channel 0: i % 256, channel 1: i // 256).
N_FRAMES = 300

TINY = {
    "seed": 0,
    "device": "cpu",
    "collect": {"episodes": 2, "max_steps": 50},
    "vae": {"epochs": 1, "batch_size": 16, "channels": [8, 8, 16, 16]},
    "wm": {"epochs": 2, "batch_size": 4, "seq_len": 8, "hidden": 32, "embed_dim": 8},
    "ctrl": {"popsize": 4, "generations": 2, "rollouts": 1, "max_steps": 30},
    "iterate": {"rounds": 1, "episodes": 2, "max_steps": 30, "check_steps": 30, "wm_epochs": 1},
    "eval": {
        "episodes": 1,
        "max_steps": 30,
        "video_steps": 10,
        "fidelity_panel": 3,
        "fidelity_tracks": 1,
        "fidelity_steps": 20,
    },
}


@pytest.fixture(autouse=True)
def own_resume_cache(tmp_path, monkeypatch):
    """Every test gets its own resume cache, so no test resumes another's training run."""
    monkeypatch.setenv("WM_CACHE_DIR", str(tmp_path / "wm-cache"))
    load_runtime.cache_clear()
    yield
    load_runtime.cache_clear()


def _merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def tiny_params(**overrides) -> dict:
    """A complete params dict (DVC needs every section it tracks): defaults < TINY < overrides."""
    return _merge(_merge(WorldModelAgentConfig().model_dump(mode="json"), TINY), overrides)


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment with the test interpreter's venv first on PATH (so dvc stages find
    `python`) and `extra` variables set."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra)


def run_cli(
    args: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a command in `cwd` with `cli_env(**env)`; raise with its output if it fails (when `check`)."""
    proc = subprocess.run(args, cwd=cwd, env=cli_env(**(env or {})), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def project_copy(tmp_path: Path):
    """A temporary git repo holding a copy of the project with a given params dict, committed."""

    def make(params: dict) -> Path:
        root = tmp_path / "project"
        # the code and pipeline definition only: no venv, git history, DVC cache or pipeline outputs
        top_level = {".venv", ".git", ".cache", ".whl", ".site", "data", "models", "metrics", "plots", "videos"}
        top_level |= {".pytest_cache", ".ruff_cache", "local.env"}

        def ignore(folder: str, names: list[str]) -> set[str]:
            skip = {n for n in names if n == "__pycache__" or ".tmp" in n}
            if Path(folder) == REPO:
                skip |= top_level & set(names)
            if Path(folder) == REPO / ".dvc":
                skip |= {"cache", "tmp"} & set(names)
            return skip

        shutil.copytree(REPO, root, ignore=ignore)
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run_cli(["git", "init", "-q"], root)
        run_cli(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], root)
        run_cli(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], root)
        return root

    return make


@pytest.fixture(scope="module")
def frames_h5(tmp_path_factory):
    """An HDF5 'frames' dataset laid out like rollouts.h5 (chunked, gzip) of N_FRAMES frames."""
    frames = np.random.default_rng(0).integers(0, 256, (N_FRAMES, 64, 64, 3), dtype=np.uint8)
    i = np.arange(N_FRAMES)
    frames[:, 0, 0, 0], frames[:, 0, 0, 1] = i % 256, i // 256
    path = tmp_path_factory.mktemp("frames") / "frames.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=frames, chunks=(16, 64, 64, 3), compression="gzip", compression_opts=1)
    with h5py.File(path, "r") as f:
        yield f["frames"]
