"""Random-policy rollouts of the real game into data/rollouts.h5, in parallel worker processes.

Episode e always uses track seed `track_seed(seed, COLLECT, e)` and policy RNG
`episode_rng(seed, COLLECT, e)`, and episodes are written in index order, so the file's contents do not
depend on the number of workers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import gymnasium
import numpy as np
from tqdm import tqdm

from wm.config import CollectConfig, EnvConfig, WorldModelAgentConfig, collect_fingerprint
from wm.data import Episode, write_rollouts
from wm.envs import make_car_racing
from wm.frames import CROP_ROWS, preprocess
from wm.policies import CorrelatedRandomPolicy
from wm.utils import Stream, WorkerPool, episode_rng, track_seed


def make_env(env_cfg: EnvConfig, max_steps: int) -> gymnasium.Env:
    """The real game, truncated at min(max_steps, env.max_episode_steps)."""
    return make_car_racing(fast=env_cfg.fast, max_episode_steps=min(max_steps, env_cfg.max_episode_steps))


def run_episode(env: gymnasium.Env, cfg: CollectConfig, master_seed: int, index: int) -> Episode:
    seed = track_seed(master_seed, Stream.COLLECT, index)
    policy = CorrelatedRandomPolicy(cfg.policy, episode_rng(master_seed, Stream.COLLECT, index))
    obs, _ = env.reset(seed=seed)
    raw, actions, rewards, terminated, truncated = [obs], [], [], [], []
    done = False
    while not done:
        action = policy()
        obs, reward, term, trunc, _ = env.step(action)
        raw.append(obs)
        actions.append(action)
        rewards.append(reward)
        terminated.append(term)
        truncated.append(trunc)
        done = term or trunc
    return Episode(
        frames=preprocess(np.stack(raw)),
        actions=np.stack(actions).astype(np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminated=np.asarray(terminated, dtype=bool),
        truncated=np.asarray(truncated, dtype=bool),
        track_seed=seed,
    )


_worker_state: dict = {}


def _init_worker(cfg: WorldModelAgentConfig) -> None:
    _worker_state["cfg"] = cfg
    _worker_state["env"] = make_env(cfg.env, cfg.collect.max_steps)


def _worker_episode(index: int) -> Episode:
    cfg = _worker_state["cfg"]
    return run_episode(_worker_state["env"], cfg.collect, cfg.seed, index)


def iter_episodes(cfg: WorldModelAgentConfig) -> Iterator[Episode]:
    """Episodes 0..E-1 in order, computed by `cfg.collect.workers` processes."""
    with WorkerPool(cfg.collect.workers, _init_worker, (cfg,)) as pool:
        yield from pool.map(_worker_episode, range(cfg.collect.episodes))


def collect(cfg: WorldModelAgentConfig, out: str | Path, progress: bool = True) -> tuple[dict, float]:
    """Write `cfg.collect.episodes` episodes to `out` (atomically).

    Returns (metrics, steps_per_s): the metrics are a deterministic function of the params; the
    throughput is not, so it is kept out of them.
    """
    attrs = {
        "env_id": cfg.env.id,
        "gymnasium_version": gymnasium.__version__,
        "seed": cfg.seed,
        "params": collect_fingerprint(cfg),
        "frame_preprocessing": f"top {CROP_ROWS} rows of the 96x96 obs, area-resized to 64x64 (wm/frames.py)",
    }
    returns, lengths, terminated = [], [], 0
    start = time.perf_counter()
    bar = tqdm(total=cfg.collect.episodes, unit="ep", desc="collect", disable=not progress, mininterval=1.0)
    with write_rollouts(out, attrs) as writer, bar:
        for ep in iter_episodes(cfg):
            writer.append(ep)
            returns.append(float(ep.rewards.sum()))
            lengths.append(len(ep.actions))
            terminated += bool(ep.terminated[-1])
            bar.update(1)
            bar.set_postfix(steps_per_s=f"{sum(lengths) / (time.perf_counter() - start):.0f}")
    metrics = {
        "collect/data/episodes": len(lengths),
        "collect/data/steps": int(sum(lengths)),
        "collect/data/terminated_episodes": terminated,
        "collect/data/return_mean": float(np.mean(returns)),
        "collect/data/return_std": float(np.std(returns)),
    }
    return metrics, sum(lengths) / (time.perf_counter() - start)
