"""End to end: `dvc repro` of the real dvc.yaml on tiny params files, in temporary git repos."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import imageio.v3 as iio
import pytest
import yaml

from wm.config import WorldModelAgentConfig

from .conftest import cli_env, run_cli, tiny_params

pytestmark = pytest.mark.slow
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def commit(root: Path, message: str) -> None:
    run_cli([*GIT, "add", "-A"], root)
    run_cli([*GIT, "commit", "-qm", message], root)


def set_params(root: Path, params: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def boolean_switches(model: type = WorldModelAgentConfig, prefix: str = "") -> list[str]:
    """Dotted keys of every boolean field of the params schema, found by walking it (so new switches are
    covered without editing this test)."""
    keys = []
    for name, field in model.model_fields.items():
        if field.annotation is bool:
            keys.append(prefix + name)
        elif isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields"):
            keys += boolean_switches(field.annotation, f"{prefix}{name}.")
    return keys


def test_every_boolean_flipped_runs_and_reports(project_copy):
    """Every boolean switch away from its default in one `dvc repro` (a valid params file must never make
    a stage fail: `eval.video: false` once did, because the stage did not write its declared output)."""
    defaults = WorldModelAgentConfig().model_dump(mode="json")
    params = tiny_params(ctrl={"train_in": "dream"})
    switches = boolean_switches()
    expected = {"wm.code_input", "ctrl.use_hidden", "ctrl.dream_dropout", "iterate.warm_start", "eval.video"}
    assert expected <= set(switches)
    for key in switches:
        section, name = key.split(".")
        params[section][name] = not defaults[section][name]
    params["wm"]["dropout"] = 0.1  # what ctrl.dream_dropout needs (the config says so when it is missing)
    params["iterate"]["dream_share"] = 1.0  # what iterate.recombine: false needs (likewise)
    root = project_copy(params)
    run_cli(["dvc", "repro", "-q"], root)
    shown = run_cli(["dvc", "metrics", "show"], root).stdout
    for key in ("eval/real/return_mean", "eval/random/return_mean", "eval/dream/return_mean", "wm/val/acc"):
        assert key in shown, key
    assert list((root / "videos").iterdir()) == []  # eval.video: false -> the output folder is empty
    assert "changed" not in run_cli(["dvc", "status"], root).stdout


def test_repro_is_reproducible_cached_and_shareable(project_copy, tmp_path):
    root = project_copy(tiny_params())
    run_cli(["dvc", "repro", "-q"], root)
    status = run_cli(["dvc", "status"], root).stdout
    assert "changed" not in status and "modified" not in status, status
    flat = json.dumps(json.loads(run_cli(["dvc", "metrics", "show", "--json"], root).stdout))
    for key in ("collect/data/steps", "vae/val/psnr", "encode/all/usage", "eval/real/return_mean"):
        assert key in flat, key
    commit(root, "repro")
    lock = (root / "dvc.lock").read_text()

    # The trained agent, watched: `wm play --record` drives it on an unseen track, full resolution.
    played = run_cli(["wm", "play", "--record", "drive.mp4", "--max-steps", "40"], root)
    assert "play: track" in played.stdout
    frames = list(iio.imiter(root / "drive.mp4"))
    assert len(frames) == 40 and frames[0].shape == (400, 600, 3)
    (root / "drive.mp4").unlink()

    # The run-cache: change a param, rerun, change it back: the stages are restored, not retrained.
    set_params(root, tiny_params(vae={"epochs": 2}))
    run_cli(["dvc", "repro", "-q"], root)
    assert (root / "dvc.lock").read_text() != lock
    set_params(root, tiny_params())
    back = run_cli(["dvc", "repro"], root)
    for stage in ("train_vae", "encode", "train_wm", "train_ctrl", "evaluate"):
        assert f"Stage '{stage}' is cached - skipping run" in back.stdout, back.stdout
    assert "vae epoch" not in back.stdout + back.stderr  # no training
    assert (root / "dvc.lock").read_text() == lock

    # Reproducible to the byte without any resume checkpoint: every hash in dvc.lock comes out the same.
    run_cli(["dvc", "repro", "-f", "-q"], root, env={"WM_CACHE_DIR": str(tmp_path / "fresh-cache")})
    assert (root / "dvc.lock").read_text() == lock
    run_cli(["git", "diff", "--exit-code", "--", "dvc.lock", "metrics", "plots"], root)

    # Shared through a DVC remote: a clone gets every output with `dvc pull`, without recomputing.
    remote = tmp_path / "remote"
    run_cli(["dvc", "remote", "add", "-d", "shared", str(remote)], root)
    commit(root, "remote")
    run_cli(["dvc", "push", "-q"], root)
    clone = tmp_path / "clone"
    run_cli(["git", "clone", "-q", str(root), str(clone)], tmp_path)
    run_cli(["dvc", "pull", "-q"], clone)
    outs = ("data/rollouts.h5", "data/tokens.h5", "data/rounds/tokens.h5", "models/vae.pt", "models/wm.pt")
    outs += ("models/agent/vae.pt", "models/agent/wm.pt", "models/agent/controller.pt")
    for out in outs:
        assert md5(clone / out) == md5(root / out), out
    assert "changed" not in run_cli(["dvc", "status"], clone).stdout


def test_list_override_reaches_the_encoder(project_copy):
    root = project_copy(tiny_params())
    run_cli(["dvc", "repro", "-q", "encode"], root)
    commit(root, "encode")
    run_cli(["dvc", "exp", "run", "-q", "-S", "fsq.levels=[8,6,5]", "encode"], root)
    with h5py.File(root / "data" / "tokens.h5") as f:
        assert json.loads(f.attrs["levels"]) == [8, 6, 5]
        assert f["codes"].shape[1] == 3 and f["tokens"][:].max() < 240
    assert "vae/val/psnr" in run_cli(["dvc", "metrics", "diff", "--json"], root).stdout


def test_killed_training_publishes_the_same_bytes(project_copy, tmp_path):
    """kill -9 in the middle of train_wm, rerun: the published model is byte-identical to an
    uninterrupted run's (it once held equal tensors but different bytes, so DVC reran every later stage)."""
    root = project_copy(tiny_params(wm={"epochs": 6}))
    run_cli(["dvc", "repro", "-q", "train_wm"], root)
    whole = md5(root / "models" / "wm.pt")
    cache = tmp_path / "kill-cache"
    stage = [sys.executable, "-m", "stages.train_wm", "--out", "models/killed.pt"]
    env = cli_env(WM_CACHE_DIR=str(cache))
    proc = subprocess.Popen(stage, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(cache.glob("wm/*.pt")) and time.time() < deadline:  # the first epoch's resume checkpoint
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (root / "models" / "killed.pt").exists(), "killed before it finished: raise wm.epochs"
    resumed = run_cli(stage, root, env={"WM_CACHE_DIR": str(cache)})
    assert "resuming from" in resumed.stdout
    assert md5(root / "models" / "killed.pt") == whole
