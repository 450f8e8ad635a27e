"""Shared fixtures: a tiny configuration that exercises every stage in seconds."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wm.config import WorldModelAgentConfig

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
REPO = Path(__file__).resolve().parents[1]

TINY = {
    "seed": 0,
    "device": "cpu",
    "collect": {"episodes": 2, "max_steps": 50, "workers": 1},
    "vae": {"epochs": 1, "batch_size": 16, "channels": [8, 8, 16, 16]},
    "wm": {"epochs": 2, "batch_size": 4, "seq_len": 8, "hidden": 32, "embed_dim": 8},
    "ctrl": {"popsize": 4, "generations": 2, "rollouts": 1, "max_steps": 30, "workers": 1},
    "eval": {"episodes": 1, "max_steps": 30, "workers": 1, "video_steps": 10},
}


def _merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def tiny_params(**overrides) -> dict:
    """A complete params dict (DVC needs every section it tracks): defaults < TINY < overrides."""
    return _merge(_merge(WorldModelAgentConfig().model_dump(mode="json"), TINY), overrides)


def run_cli(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command with the test interpreter's venv first on PATH (so dvc stages find `python`)."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def project_copy(tmp_path: Path):
    """A temporary git repo holding a copy of the project with a given params dict, committed."""

    def make(params: dict) -> Path:
        root = tmp_path / "project"
        # the code and pipeline definition only: no venv, git history, DVC cache or pipeline outputs
        top_level = {".venv", ".git", "data", "models", "metrics", "plots", ".pytest_cache", ".ruff_cache"}

        def ignore(folder: str, names: list[str]) -> set[str]:
            skip = {n for n in names if n == "__pycache__" or n.endswith(".tmp")}
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
