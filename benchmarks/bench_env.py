"""Steps/s of stock CarRacing-v3 vs FastCarRacing on one core, frame preprocessing, and fast-env throughput vs
worker count.

    .venv/bin/python benchmarks/bench_env.py --steps 1000 --workers 1 2
    .venv/bin/python benchmarks/bench_env.py --agent --workers 1 2    # real-game fitness beside the env

The single-core comparison pins this process to one CPU and replays the same seeded random actions
through both envs (resetting with the next seed whenever an episode ends), so both render the same
frames. Each rate is the best of ``--repeats`` runs (stock and fast interleaved), which filters out
interference from other processes on a shared machine. The worker table runs gymnasium's
AsyncVectorEnv over the fast env, unpinned; it is only meaningful on otherwise idle cores.

--agent adds real-game fitness as CMA-ES runs it (wm.episodes.play_episodes on a WorkerPool: env, frame
preprocessing, the default-size FSQ-VAE encoder and a linear controller per step), one frame at a time and
--lockstep episodes per worker (ctrl.lockstep), beside the fast env alone with as many workers.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import time

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import numpy as np

from wm.envs import make_car_racing


@contextlib.contextmanager
def one_core():
    """Pin this process to a single CPU (where the OS allows it) for the duration of the block."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


def random_actions(seed: int, n: int, num_envs: int | None = None) -> np.ndarray:
    size = (n, 3) if num_envs is None else (n, num_envs, 3)
    return np.random.default_rng(seed).uniform([-1, 0, 0], [1, 1, 1], size=size).astype(np.float32)


def single_env_rate(fast: bool, seed: int, actions: np.ndarray) -> float:
    env = make_car_racing(fast=fast)
    episode_seed = seed
    env.reset(seed=episode_seed)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            episode_seed += 1
            env.reset(seed=episode_seed)
    rate = len(actions) / (time.perf_counter() - start)
    env.close()
    return rate


def vector_rate(num_workers: int, seed: int, steps: int) -> float:
    env = gym.vector.AsyncVectorEnv([functools.partial(make_car_racing, fast=True)] * num_workers)
    env.reset(seed=seed)
    actions = random_actions(seed, steps, num_workers)
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    rate = steps * num_workers / (time.perf_counter() - start)
    env.close()
    return rate


def preprocess_micros(seed: int, actions: np.ndarray, repeats: int) -> tuple[float, float]:
    """Microseconds per frame of wm.frames.preprocess on the fast env's frames: one frame per call, and 8 per call
    (best of `repeats` passes)."""
    import torch

    from wm.frames import preprocess

    torch.set_num_threads(1)  # as in the workers (wm/parallel.py)
    env = make_car_racing(fast=True)
    obs = [env.reset(seed=seed)[0]] + [env.step(a)[0] for a in actions[:255]]
    env.close()
    frames = np.stack(obs)  # (256, 96, 96, 3)
    single = batch = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for frame in frames:
            preprocess(frame)
        single = min(single, (time.perf_counter() - start) / len(frames) * 1e6)
        start = time.perf_counter()
        for i in range(0, len(frames), 8):
            preprocess(frames[i : i + 8])
        batch = min(batch, (time.perf_counter() - start) / len(frames) * 1e6)
    return single, batch


def agent_rate(workers: int, lockstep: int, episodes: int, steps: int) -> float:
    """Steps/s of `episodes` agent episodes of `steps` steps (random controllers, tracks 0..) on `workers`."""
    from wm.agent import AgentModels
    from wm.config import WorldModelAgentConfig
    from wm.episodes import EpisodeTask, init_worker, play_episodes
    from wm.models.fsq_vae import FSQVAE
    from wm.parallel import WorkerPool
    from wm.seeding import Stream

    cfg = WorldModelAgentConfig()
    models = AgentModels.of(FSQVAE(cfg.fsq_vae).eval(), cfg.controller)
    P = 3 * cfg.fsq.dim + 3
    params = np.random.default_rng(0).normal(0, 0.5, (episodes, P)).astype(np.float32)
    tasks = [EpisodeTask((Stream.EVAL, i), (Stream.EVAL, i), steps, params[i]) for i in range(episodes)]
    with WorkerPool(workers, init_worker, (cfg, True, models)) as pool:
        play_episodes(pool, tasks[: 2 * workers * lockstep], "warm-up", lockstep=lockstep)  # spawn, imports, envs
        start = time.perf_counter()
        played = play_episodes(pool, tasks, "agent", lockstep=lockstep)
        return sum(ep.steps for ep in played) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="steps per single-env run and per worker")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the best is kept")
    parser.add_argument("--agent", action="store_true", help="also measure real-game fitness (the agent)")
    parser.add_argument("--episodes", type=int, default=32, help="agent episodes per measurement (--agent)")
    parser.add_argument("--lockstep", type=int, nargs="+", default=[8], help="episodes in lockstep (--agent; 1 too)")
    args = parser.parse_args()

    actions = random_actions(args.seed, args.steps)
    stock = fast = 0.0
    with one_core():
        for _ in range(args.repeats):
            stock = max(stock, single_env_rate(False, args.seed, actions))
            fast = max(fast, single_env_rate(True, args.seed, actions))
    print(f"single core, {args.steps} steps, seed {args.seed}, best of {args.repeats}")
    print(f"{'env':<8}{'steps/s':>10}{'speedup':>10}")
    print(f"{'stock':<8}{stock:>10.0f}{1.0:>10.2f}")
    print(f"{'fast':<8}{fast:>10.0f}{fast / stock:>10.2f}")
    with one_core():
        single, batch = preprocess_micros(args.seed, actions, args.repeats)
    print(f"preprocessing (wm.frames.preprocess): {single:.0f} us/frame one at a time, {batch:.0f} in batches of 8")

    print(f"\nfast env, AsyncVectorEnv, {args.steps} steps per worker ({os.cpu_count()} CPUs)")
    print(f"{'workers':<8}{'steps/s':>10}{'per wkr':>10}")
    for n in args.workers:
        rate = max(vector_rate(n, args.seed, args.steps) for _ in range(args.repeats))
        print(f"{n:<8}{rate:>10.0f}{rate / n:>10.0f}")
    if args.agent:
        print(f"\nreal-game fitness (env + VAE encoder + controller), {args.episodes} episodes of {args.steps} steps")
        print(f"{'workers':<8}{'lockstep':>10}{'steps/s':>10}")
        for n in args.workers:
            for lockstep in sorted({1, *args.lockstep}):
                rate = max(agent_rate(n, lockstep, args.episodes, args.steps) for _ in range(args.repeats))
                print(f"{n:<8}{lockstep:>10}{rate:>10.0f}")


if __name__ == "__main__":
    main()
