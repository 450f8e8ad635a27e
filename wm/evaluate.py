"""Real-game evaluation of a controller on unseen tracks, beside the random data policy on the same
tracks, and a video of one episode with each real frame beside its FSQ-VAE reconstruction."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from wm.episodes import Episode, EpisodeTask, play_task
from wm.files import atomic_path
from wm.models.fsq_vae import FSQVAE
from wm.parallel import WorkerPool
from wm.seeding import Stream


def return_summary(prefix: str, returns: list[float]) -> dict[str, float]:
    r = np.asarray(returns)
    return {
        f"{prefix}/return_mean": float(r.mean()),
        f"{prefix}/return_std": float(r.std()),
        f"{prefix}/return_min": float(r.min()),
        f"{prefix}/return_max": float(r.max()),
    }


def evaluate_real(
    pool: WorkerPool, params: np.ndarray, episodes: int, max_steps: int, record: int
) -> tuple[dict[str, float], list[dict], Episode]:
    """Play tracks 0..episodes-1 of the EVAL stream with the controller and with the random policy (its
    noise from the BASELINE stream). Returns (metrics, per-track rows, the first controller episode with
    its first `record` frames)."""
    tasks = [
        EpisodeTask((Stream.EVAL, i), (Stream.EVAL, i), max_steps, params, record if i == 0 else 0)
        for i in range(episodes)
    ]
    tasks += [EpisodeTask((Stream.EVAL, i), (Stream.BASELINE, i), max_steps) for i in range(episodes)]
    results = list(pool.map(play_task, tasks))
    agent, random = results[:episodes], results[episodes:]
    metrics = return_summary("eval/real", [e.ret for e in agent]) | return_summary(
        "eval/random", [e.ret for e in random]
    )
    metrics["eval/real/steps_mean"] = float(np.mean([e.steps for e in agent]))
    rows = [
        {"episode": i, "track_seed": a.track_seed, "agent": a.ret, "random": r.ret}
        for i, (a, r) in enumerate(zip(agent, random, strict=True))
    ]
    return metrics, rows, agent[0]


@torch.no_grad()
def beside_reconstructions(vae: FSQVAE, frames: np.ndarray) -> np.ndarray:
    """(T, 64, 64, 3) uint8 frames -> (T, 64, 128, 3): each frame (left) beside its reconstruction (right)."""
    recon = vae.decode_codes(vae.encode(torch.from_numpy(frames))[1])  # (T, 3, H, W) in [0, 1]
    recon = recon.permute(0, 2, 3, 1).mul(255).round().clamp(0, 255).to(torch.uint8).numpy()  # (T, H, W, 3)
    return np.concatenate([frames, recon], axis=2)


def save_gif(frames: np.ndarray, path: Path, scale: int = 3, every: int = 2, fps: float = 50) -> None:
    """(T, H, W, 3) uint8 -> GIF of every `every`-th frame, upscaled `scale`x, at real-game speed."""
    frames = frames[::every].repeat(scale, axis=1).repeat(scale, axis=2)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, frames, extension=".gif", duration=1000 * every / fps, loop=0)
