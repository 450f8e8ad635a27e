"""wm/parallel.py: the Ray backend gives what the local processes give, byte for byte, on a local 2-CPU Ray."""

import sys
import time

import numpy as np
import pytest

from wm.agent import AgentModels
from wm.collect import DataCollector
from wm.config import parse_params
from wm.episodes import EpisodeTask, init_worker, play_episodes
from wm.errors import WmError
from wm.es import RealFitness
from wm.evaluate import evaluate_real
from wm.models.controller import ControllerSpec
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel
from wm.parallel import RayWorkerPool, WorkerPool, connect_ray, open_pool
from wm.runtime import RuntimeSettings
from wm.seeding import Stream, seed_everything

from .conftest import tiny_params

ray = pytest.importorskip("ray")
RAY = RuntimeSettings(backend="ray", workers=2)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray runtime of 2 CPUs for the module (start-up costs seconds), as `WM_BACKEND=ray` starts it."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the helpers below, for Ray's workers
    mp = pytest.MonkeyPatch()
    mp.delenv("RAY_ADDRESS", raising=False)
    connect_ray(num_cpus=2)  # the pools below join it
    yield
    ray.shutdown()
    mp.undo()


@pytest.fixture(scope="module")
def agent():
    cfg = parse_params(tiny_params(ctrl={"use_hidden": True}))
    seed_everything(0)
    models = AgentModels.of(FSQVAE(cfg.fsq_vae).eval(), cfg.controller, WorldModel(cfg.world_model).eval())
    params = np.random.default_rng(1).normal(0, 1, (5, ControllerSpec.from_config(cfg.controller).num_params))
    return cfg, models, params.astype(np.float32)


def _no_setup() -> None:
    pass


def _slow_square(i: int) -> int:
    time.sleep(0.3 if i == 0 else 0.0)  # the first item finishes last
    if i == 7:
        raise WmError("item 7 failed")
    return i * i


def test_ray_pool_keeps_input_order_and_raises_the_items_error():
    with RayWorkerPool(2, _no_setup, ()) as pool:
        assert list(pool.map(_slow_square, range(7))) == [i * i for i in range(7)]
        with pytest.raises(WmError, match="item 7 failed"):
            list(pool.map(_slow_square, range(9)))


def test_auto_workers_are_the_ray_clusters_cpus(monkeypatch):
    with open_pool(RuntimeSettings(backend="ray", workers=0), 100, _no_setup, ()) as pool:
        assert isinstance(pool, RayWorkerPool) and pool.workers == 2
    with open_pool(RuntimeSettings(backend="ray", workers=0), 1, _no_setup, ()) as pool:
        assert pool.workers == 1  # never more workers than items
    monkeypatch.setenv("WM_BACKEND", "threads")
    with pytest.raises(Exception, match="backend"):
        RuntimeSettings()


def test_collect_writes_the_same_file_on_ray(tmp_path):
    cfg = parse_params(tiny_params(collect={"episodes": 3, "max_steps": 30}))
    files = []
    for name, runtime in (("processes", RuntimeSettings(workers=2)), ("ray", RAY)):
        files.append(tmp_path / f"{name}.h5")
        DataCollector(cfg, runtime).collect(files[-1], progress=False)
    assert files[0].read_bytes() == files[1].read_bytes()


def test_real_fitness_and_evaluation_are_the_same_on_ray(agent):
    """Real-game fitness (lockstep groups, h read by the controller) and evaluate's rows: one local process
    against 2 Ray actors."""
    cfg, models, params = agent
    results = []
    for pool in (WorkerPool(1, init_worker, (cfg, True, models)), open_pool(RAY, 10, init_worker, (cfg, True, models))):
        with pool:
            fitness = RealFitness(pool, rollouts=2, max_steps=25, lockstep=4)(params, 0)
            summary, rows, _ = evaluate_real(pool, params[0], episodes=3, max_steps=20, record=0, lockstep=4)
            tasks = [EpisodeTask((Stream.EVAL, i), (Stream.EVAL, i), 12, params[i % 5]) for i in range(11)]
            actions = [ep.actions for ep in play_episodes(pool, tasks, "test", lockstep=4)]
        results.append((fitness, summary, rows, actions))
    (f1, s1, r1, a1), (f2, s2, r2, a2) = results
    assert np.array_equal(f1, f2) and s1 == s2 and r1 == r2
    assert all(np.array_equal(a, b) for a, b in zip(a1, a2, strict=True))
