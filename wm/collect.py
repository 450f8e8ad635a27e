"""Data collection: episodes of the real game written to an HDF5 rollouts file, in parallel workers.

Episode e of the random-policy data uses track `track_seed(seed, COLLECT, e)` and the policy noise stream
(seed, COLLECT, e), and episodes are written in index order, so the file does not depend on the number of
workers (tested byte for byte).
"""

from __future__ import annotations

import time
from pathlib import Path

import gymnasium
import numpy as np
from tqdm import tqdm

from wm.config import WorldModelAgentConfig, collect_fingerprint
from wm.datafiles import write_rollouts
from wm.episodes import ALL_FRAMES, EpisodeTask, init_worker, play_task
from wm.frames import CROP_ROWS
from wm.parallel import open_pool
from wm.runtime import RuntimeSettings, load_runtime
from wm.seeding import Stream


def random_policy_tasks(cfg: WorldModelAgentConfig) -> list[EpisodeTask]:
    """The `collect.episodes` episodes of the correlated random policy, every frame kept."""
    return [
        EpisodeTask(
            track=(Stream.COLLECT, e),
            noise=(Stream.COLLECT, e),
            max_steps=cfg.collect.max_steps,
            keep_frames=ALL_FRAMES,
        )
        for e in range(cfg.collect.episodes)
    ]


class DataCollector:
    """Record episodes of CarRacing-v3 into an HDF5 rollouts file (layout: wm/datafiles.py).

    >>> from wm import WorldModelAgentConfig, DataCollector
    >>> cfg = WorldModelAgentConfig(collect={"episodes": 2, "max_steps": 50})
    >>> metrics = DataCollector(cfg).collect("rollouts.h5")
    >>> metrics["collect/data/episodes"]
    2
    """

    def __init__(self, config: WorldModelAgentConfig, runtime: RuntimeSettings | None = None):
        self.config = config
        self.runtime = runtime or load_runtime()
        self.steps_per_s = 0.0  # throughput of the last `collect` (kept out of the metrics: not reproducible)

    def collect(
        self, out: str | Path, tasks: list[EpisodeTask] | None = None, models=None, progress: bool = True
    ) -> dict:
        """Play `tasks` (default: the random-policy episodes of `collect`) and write them to `out` atomically;
        `models` (wm.agent.AgentModels) drive the tasks that carry controller params. Returns the metrics."""
        cfg = self.config
        tasks = random_policy_tasks(cfg) if tasks is None else tasks
        attrs = {
            "env_id": cfg.env.id,
            "gymnasium_version": gymnasium.__version__,
            "seed": cfg.seed,
            "params": collect_fingerprint(cfg),
            "frame_preprocessing": f"top {CROP_ROWS} rows of the 96x96 obs, area-resized to 64x64 (wm/frames.py)",
        }
        returns, lengths, terminated = [], [], 0
        start = time.perf_counter()
        bar = tqdm(total=len(tasks), unit="ep", desc="collect", disable=not progress, mininterval=1.0)
        with (
            write_rollouts(out, attrs) as writer,
            bar,
            open_pool(self.runtime, len(tasks), init_worker, (cfg, self.runtime.fast_env, models)) as pool,
        ):
            self.workers = pool.workers
            for ep in pool.map(play_task, tasks):
                writer.append(ep)
                returns.append(ep.ret)
                lengths.append(ep.steps)
                terminated += bool(ep.terminated[-1])
                bar.update(1)
                bar.set_postfix(steps_per_s=f"{sum(lengths) / (time.perf_counter() - start):.0f}")
        self.steps_per_s = sum(lengths) / (time.perf_counter() - start)
        return {
            "collect/data/episodes": len(lengths),
            "collect/data/steps": int(sum(lengths)),
            "collect/data/terminated_episodes": terminated,
            "collect/data/return_mean": float(np.mean(returns)),
            "collect/data/return_std": float(np.std(returns)),
        }
