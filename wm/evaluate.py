"""Real-game evaluation of a controller on unseen tracks, beside the random data policy on the same
tracks, and a video of one episode with each real frame beside its FSQ-VAE reconstruction."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from wm.agent import Episode, play_task, stream_seeds
from wm.utils import Stream, WorkerPool, atomic_path


def _summary(prefix: str, returns: list[float]) -> dict[str, float]:
    r = np.asarray(returns)
    return {
        f"{prefix}/return_mean": float(r.mean()),
        f"{prefix}/return_std": float(r.std()),
        f"{prefix}/return_min": float(r.min()),
        f"{prefix}/return_max": float(r.max()),
    }


def evaluate_real(
    pool: WorkerPool, params: np.ndarray, master_seed: int, episodes: int, max_steps: int, record: int
) -> tuple[dict[str, float], list[dict], Episode]:
    """Play `episodes` tracks of the EVAL stream with the controller and with the random policy.

    Returns (metrics, per-episode rows, the first controller episode with `record` frames)."""
    seeds = stream_seeds(master_seed, Stream.EVAL, 0, episodes)
    tasks = [(params, s, max_steps, record if i == 0 else 0) for i, s in enumerate(seeds)]
    tasks += [(None, s, max_steps, 0) for s in seeds]
    results = list(pool.map(play_task, tasks))
    agent, random = results[:episodes], results[episodes:]
    metrics = _summary("eval/real", [e.ret for e in agent]) | _summary("eval/random", [e.ret for e in random])
    metrics["eval/real/steps_mean"] = float(np.mean([e.steps for e in agent]))
    rows = [
        {"episode": i, "track_seed": s, "agent": a.ret, "random": r.ret}
        for i, (s, a, r) in enumerate(zip(seeds, agent, random, strict=True))
    ]
    return metrics, rows, agent[0]


def save_video(episode: Episode, path: Path, scale: int = 3, every: int = 2) -> None:
    """GIF of the real 64x64 frame (left) beside its reconstruction (right), every `every`-th step."""
    frames = np.concatenate([episode.frames, episode.recons], axis=2)[::every]  # (T, 64, 128, 3)
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, frames, extension=".gif", duration=1000 * every / 50, loop=0)
