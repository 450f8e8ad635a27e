"""Actor-critic updates/s and imagined steps/s of the default-size world model at several batch sizes.

    .venv/bin/python benchmarks/bench_actor_critic.py           # batches 256 1024 4096, CPU and CUDA if present
    .venv/bin/python benchmarks/bench_actor_critic.py --quick   # fewer updates

One update imagines B trajectories of `ctrl.ac.horizon` steps from real states (after `ctrl.ac.warmup` steps
through the LSTM) and takes one Adam step on the actor (MLP on [z, h]) and the critic; an imagined step is
one trajectory advanced one step, so B x horizon per update. The world model is randomly initialised and
the start states come from a synthetic token dataset: speed does not depend on either. Each rate is the best
of `--repeats` runs (a shared machine's interference filtered out).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import add_devices_option, devices

from wm.checkpoints import ResumeCache
from wm.config import ActorCriticConfig, WorldModelAgentConfig
from wm.datafiles import StepData, Tokens
from wm.dream import make_dream
from wm.models.controller import ControllerSpec
from wm.models.world_model import WorldModel
from wm.trainers.actor_critic import ActorCriticTrainer


def synthetic_tokens(cfg: WorldModelAgentConfig, episodes: int = 64, length: int = 200) -> Tokens:
    rng = np.random.default_rng(0)
    steps = episodes * length
    step_data = StepData(
        actions=rng.uniform(0, 1, (steps, 3)).astype(np.float32),
        rewards=np.zeros(steps, np.float32),
        terminated=np.zeros(steps, bool),
        truncated=np.zeros(steps, bool),
        step_offsets=np.arange(episodes + 1) * length,
        track_seeds=np.zeros(episodes, np.uint64),
    )
    tokens = rng.integers(0, cfg.fsq.codebook_size, steps + episodes)
    return Tokens(tokens, np.zeros((len(tokens), cfg.fsq.dim), np.float32), step_data, cfg.fsq.levels)


def update_rate(batch: int, updates: int, device: torch.device, cache_dir: str) -> tuple[float, float]:
    """(updates/s, imagined steps/s) of `updates` actor-critic updates of width `batch`, after one warm-up update
    (a first run of 1 update, which the timed run resumes from)."""
    cfg = WorldModelAgentConfig()
    ac = ActorCriticConfig(batch=batch, updates=updates + 1, eval_every=10**6, eval_dreams=1)
    model = WorldModel(cfg.world_model).to(device)
    data = synthetic_tokens(cfg)
    measuring = make_dream(model, torch.arange(cfg.fsq.codebook_size), 1.0, max_steps=1)  # a negligible measure
    spec = ControllerSpec("mlp", cfg.fsq.dim, cfg.wm.hidden, cfg.ctrl.mlp_hidden)
    cache = ResumeCache(Path(cache_dir), "bench", {"batch": batch, "device": device.type})
    critic_dim = cfg.fsq.dim + cfg.wm.hidden
    warm = ActorCriticTrainer(spec, ac.model_copy(update={"updates": 1}), critic_dim, 0, device, progress=False)
    with contextlib.redirect_stdout(io.StringIO()):  # the trainer's own progress lines
        warm.fit(measuring, data, cache)
    timed = ActorCriticTrainer(spec, ac, critic_dim, 0, device, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        timed.fit(measuring, data, cache)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    return updates / seconds, updates * batch * ac.horizon / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096], help="imagined trajectories B")
    parser.add_argument("--updates", type=int, default=10, help="timed updates per measurement")
    parser.add_argument("--quick", action="store_true", help="3 updates per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="runs per measurement; the best is kept")
    add_devices_option(parser)
    args = parser.parse_args()
    updates = 3 if args.quick else args.updates
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for device in devices(args):
        for batch in args.batches:
            best = (0.0, 0.0)
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as cache_dir:
                    best = max(best, update_rate(batch, updates, device, cache_dir))
            print(f"{device.type:4s} batch {batch:6d}: {best[0]:8.2f} updates/s  {best[1]:12,.0f} imagined steps/s")


if __name__ == "__main__":
    main()
