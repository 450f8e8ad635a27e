import json
import signal
import subprocess
import sys
import time

import gymnasium
import h5py
import numpy as np
import pytest

from wm.collect import collect
from wm.config import parse_params
from wm.data import Rollouts
from wm.utils import Stream, track_seed

from .conftest import REPO, tiny_params


def _collect(tmp_path, name="r.h5", **collect_overrides):
    cfg = parse_params(tiny_params(collect=collect_overrides))
    out = tmp_path / name
    metrics, _ = collect(cfg, out, progress=False)
    return cfg, out, metrics


def test_collect_layout(tmp_path):
    cfg, out, metrics = _collect(tmp_path)
    with Rollouts(out) as r:
        steps = r.steps
        assert steps.num_episodes == 2
        assert steps.step_offsets.tolist() == [0, 50, 100]  # 50 steps each (truncated by max_steps)
        assert r.frames.shape == (102, 64, 64, 3) and r.frames.dtype == np.uint8  # T+1 frames per episode
        assert steps.actions.shape == (100, 3) and steps.actions.dtype == np.float32
        assert steps.rewards.shape == (100,) and steps.rewards.dtype == np.float32
        assert steps.terminated.dtype == bool and steps.truncated.dtype == bool
        # the time limit ends each episode at its last step, and only there
        assert np.flatnonzero(steps.truncated).tolist() == [49, 99]
        assert not steps.terminated.any()
        assert steps.track_seeds.tolist() == [track_seed(0, Stream.COLLECT, i) for i in range(2)]
        assert (steps.actions[:, 0] >= -1).all() and (steps.actions[:, 0] <= 1).all()
        assert (steps.actions[:, 1:] >= 0).all() and (steps.actions[:, 1:] <= 1).all()
        assert r.frames.chunks is not None and r.frames.compression == "gzip"
        assert r.attrs["env_id"] == "CarRacing-v3"
        assert r.attrs["gymnasium_version"] == gymnasium.__version__
        assert r.attrs["seed"] == 0
        assert json.loads(r.attrs["params"])["collect"]["episodes"] == 2
        # frames change over the episode (the zoom-in animation, then the car moves)
        assert np.abs(r.frames[0].astype(int) - r.frames[50].astype(int)).mean() > 1
    assert metrics["collect/data/steps"] == 100


def test_policy_moves_the_car(tmp_path):
    """Correlated actions with a gas bias drive along the track: tiles get visited (reward > -0.1/step)."""
    _, out, _ = _collect(tmp_path, episodes=2, max_steps=200)
    with Rollouts(out) as r:
        assert (r.steps.rewards > 0).sum() >= 10
        assert np.abs(np.diff(r.steps.actions[:, 0])).mean() < 0.5  # temporally correlated steering


def test_same_file_whatever_the_worker_count(tmp_path):
    _, one, _ = _collect(tmp_path, "one.h5", episodes=3, max_steps=30, workers=1)
    _, two, _ = _collect(tmp_path, "two.h5", episodes=3, max_steps=30, workers=2)
    with h5py.File(one) as a, h5py.File(two) as b:
        assert set(a) == set(b)
        for key in a:
            assert np.array_equal(a[key][:], b[key][:]), key
    assert one.read_bytes() == two.read_bytes()  # byte-identical: DVC sees the same output


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_collect_leaves_no_output(tmp_path, sig):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(tiny_params(collect={"episodes": 50, "max_steps": 200, "workers": 1})))
    out = tmp_path / "data" / "r.h5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.collect", "--params", str(params), "--out", str(out)]
        + ["--metrics", str(tmp_path / "collect.json")],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not any(out.parent.glob(".r.h5.*.tmp")) and time.time() < deadline:  # wait until it is writing
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert not out.exists() and not (tmp_path / "collect.json").exists()
    if sig == signal.SIGINT:  # Ctrl-C: one line, no traceback, and the temporary file is removed too
        assert proc.returncode == 130
        assert stderr.strip().splitlines()[-1].startswith("interrupted:") and "Traceback" not in stderr
        assert not any(out.parent.glob("*.tmp")) and not any(out.parent.glob(".*.tmp"))


def test_missing_and_corrupt_inputs_are_one_line_errors(tmp_path):
    from wm.utils import WmError

    with pytest.raises(WmError, match="missing input .*dvc repro collect"):
        Rollouts(tmp_path / "nope.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(WmError, match="not a readable HDF5 file"):
        Rollouts(bad)
    _, out, _ = _collect(tmp_path)
    with h5py.File(out, "a") as f:
        del f["rewards"]
    with pytest.raises(WmError, match=r"incomplete file, missing datasets \['rewards'\]"):
        Rollouts(out)
