"""wm/collect.py: random-policy episodes of the real game -> an HDF5 rollouts file, in parallel workers."""

import json
import os
import signal
import subprocess
import sys
import time

import gymnasium
import h5py
import numpy as np
import pytest
import torch

from wm.agent import AgentModels
from wm.collect import DataCollector, random_policy_tasks
from wm.config import collect_fingerprint, parse_params
from wm.datafiles import Rollouts
from wm.episodes import ALL_FRAMES, EpisodeTask, init_worker
from wm.errors import WmError
from wm.es import RealFitness
from wm.evaluate import evaluate_real
from wm.models.controller import ControllerSpec, squash_actions
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel
from wm.parallel import WorkerPool
from wm.runtime import RuntimeSettings
from wm.seeding import Stream, seed_everything, track_seed

from .conftest import REPO, tiny_params


def _collect(tmp_path, name="r.h5", workers: int = 1, **collect_overrides):
    cfg = parse_params(tiny_params(collect=collect_overrides))
    out = tmp_path / name
    metrics = DataCollector(cfg, RuntimeSettings(workers=workers)).collect(out, progress=False)
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
        assert json.loads(r.attrs["params"]) == collect_fingerprint(cfg)
        assert json.loads(r.attrs["params"])["collect"]["episodes"] == 2
        assert r.attrs["format_version"] == 1 and "84 rows" in r.attrs["frame_preprocessing"]
        # frames change over the episode (the zoom-in animation, then the car moves)
        assert np.abs(r.frames[0].astype(int) - r.frames[50].astype(int)).mean() > 1
        returns = [
            steps.rewards[a:b].sum(dtype=np.float64)
            for a, b in zip(steps.step_offsets[:-1], steps.step_offsets[1:], strict=True)
        ]
    assert metrics["collect/data/steps"] == 100
    assert metrics["collect/data/episodes"] == 2 and metrics["collect/data/terminated_episodes"] == 0
    assert metrics["collect/data/return_mean"] == pytest.approx(np.mean(returns))
    assert metrics["collect/data/return_std"] == pytest.approx(np.std(returns))


def test_default_tasks_are_the_collect_episodes():
    cfg = parse_params(tiny_params(collect={"episodes": 3, "max_steps": 40}))
    tasks = random_policy_tasks(cfg)
    assert [t.track for t in tasks] == [(Stream.COLLECT, e) for e in range(3)]
    assert [t.noise for t in tasks] == [(Stream.COLLECT, e) for e in range(3)]
    assert all(t.max_steps == 40 and t.params is None and t.keep_frames == ALL_FRAMES for t in tasks)


def test_policy_moves_the_car(tmp_path):
    """Correlated actions with a gas bias drive along the track: tiles get visited (reward > -0.1/step)."""
    cfg, out, _ = _collect(tmp_path, episodes=2, max_steps=200)
    hold_min = cfg.collect.policy.hold_min
    with Rollouts(out) as r:
        assert (r.steps.rewards > 0).sum() >= 10
        assert np.abs(np.diff(r.steps.actions[:, 0])).mean() < 0.5  # temporally correlated steering
        # gas/brake are held for at least hold_min steps (the last segment of an episode may be cut short)
        for a, b in zip(r.steps.step_offsets[:-1], r.steps.step_offsets[1:], strict=True):
            held = r.steps.actions[a:b, 1:]
            change = np.flatnonzero((held[1:] != held[:-1]).any(axis=1)) + 1
            assert len(change) >= 5 and np.diff(np.r_[0, change]).min() >= hold_min > 1


def test_same_file_whatever_the_worker_count(tmp_path):
    _, one, _ = _collect(tmp_path, "one.h5", workers=1, episodes=3, max_steps=30)
    _, two, _ = _collect(tmp_path, "two.h5", workers=2, episodes=3, max_steps=30)
    with h5py.File(one) as a, h5py.File(two) as b:
        assert set(a) == set(b)
        for key in a:
            assert np.array_equal(a[key][:], b[key][:]), key
    assert one.read_bytes() == two.read_bytes()  # byte-identical: DVC sees the same output


def test_agent_tasks_with_models(tmp_path):
    """collect(tasks, models): episodes of the agent (tasks carrying controller params) are recorded the same way."""
    cfg = parse_params(tiny_params())
    seed_everything(0)
    models = AgentModels.of(FSQVAE(cfg.fsq_vae), cfg.controller, None)
    spec = ControllerSpec.from_config(cfg.controller)
    params = np.zeros(spec.num_params, np.float32)
    params[-3:] = (0.4, 1.0, -1.0)  # bias only: a fixed action
    tasks = [EpisodeTask((Stream.EVAL, i), (Stream.EVAL, i), 12, params, ALL_FRAMES) for i in range(2)]
    out = tmp_path / "agent.h5"
    metrics = DataCollector(cfg, RuntimeSettings(workers=1)).collect(out, tasks, models, progress=False)
    assert metrics["collect/data/steps"] == 24
    expected = squash_actions(torch.tensor([[0.4, 1.0, -1.0]]))[0].numpy()
    with Rollouts(out) as r:
        assert r.steps.track_seeds.tolist() == [track_seed(0, Stream.EVAL, i) for i in range(2)]
        np.testing.assert_allclose(r.steps.actions, np.tile(expected, (24, 1)), rtol=1e-6)
        assert r.frames.shape == (26, 64, 64, 3)


class SpyPool:
    """Passes map calls on to a real pool and keeps the episodes (each item a lockstep group's list)."""

    def __init__(self, pool):
        self.pool, self.workers, self.episodes = pool, pool.workers, []

    def map(self, fn, groups):
        for group in self.pool.map(fn, groups):
            self.episodes += group
            yield group


def test_evaluation_and_training_tracks_are_never_collected_tracks(tmp_path):
    """The tracks the agent is scored on (evaluate) and trained on in the real game (CMA-ES) are unseen in the
    collected data the VAE and world model learn from, and evaluation tracks are not training tracks."""
    cfg = parse_params(tiny_params(collect={"episodes": 4, "max_steps": 10}))
    out = tmp_path / "r.h5"
    DataCollector(cfg, RuntimeSettings(workers=1)).collect(out, progress=False)
    with Rollouts(out) as r:
        collected = set(r.steps.track_seeds.tolist())
    assert len(collected) == 4

    seed_everything(0)
    models = AgentModels.of(FSQVAE(cfg.fsq_vae), cfg.controller, WorldModel(cfg.world_model))
    num_params = ControllerSpec.from_config(cfg.controller).num_params
    with WorkerPool(1, init_worker, (cfg, True, models)) as pool:
        _, rows, _ = evaluate_real(
            pool, np.zeros(num_params, np.float32), episodes=4, max_steps=3, record=0, lockstep=cfg.ctrl.lockstep
        )
        spy = SpyPool(pool)
        fitness = RealFitness(spy, rollouts=2, max_steps=3, lockstep=cfg.ctrl.lockstep)
        for generation in range(2):
            fitness(np.zeros((2, num_params)), generation)
    evaluated = {r["track_seed"] for r in rows}
    trained = {ep.track_seed for ep in spy.episodes}
    assert len(evaluated) == 4 and len(trained) == 4  # 2 generations x 2 tracks, shared by both candidates
    assert collected.isdisjoint(evaluated)
    assert collected.isdisjoint(trained)
    assert evaluated.isdisjoint(trained)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_interrupted_collect_leaves_no_output(tmp_path, sig):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(tiny_params(collect={"episodes": 50, "max_steps": 200})))
    out = tmp_path / "data" / "r.h5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.collect", "--params", str(params), "--out", str(out)]
        + ["--metrics", str(tmp_path / "collect.json")],
        cwd=REPO,
        env={**os.environ, "WM_WORKERS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not any(out.parent.glob(".r.*.tmp*")) and time.time() < deadline:  # wait until it is writing
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert not out.exists() and not (tmp_path / "collect.json").exists()
    if sig != signal.SIGKILL:  # Ctrl-C or `kill`: one line, no traceback, and the temporary file is removed too
        assert proc.returncode == 128 + sig
        assert stderr.strip().splitlines()[-1].startswith(f"interrupted ({sig.name}):") and "Traceback" not in stderr
        assert list(out.parent.iterdir()) == []


def test_missing_and_corrupt_inputs_are_one_line_errors(tmp_path):
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
