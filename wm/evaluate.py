"""Real-game evaluation of a controller on unseen tracks, beside the random data policy on the same
tracks; the dream-fidelity panel (wm/fidelity.py); and a video of one episode: each real frame beside its
FSQ-VAE reconstruction and beside what the world model dreams from the same start under the same actions."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from wm.agent import encode_fixed_width
from wm.dream import DreamEnv, FixedStarts
from wm.episodes import Episode, EpisodeTask, play_episodes
from wm.fidelity import Panel, fidelity_metrics
from wm.files import atomic_path
from wm.models.controller import ControllerSpec
from wm.models.fsq import FSQ
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel
from wm.parallel import WorkerPool
from wm.seeding import Stream

# Dreams per (controller, track) of the fidelity panel: the dream samples, the game does not.
PANEL_DREAMS_PER_TRACK = 4


def return_summary(prefix: str, returns: list[float]) -> dict[str, float]:
    r = np.asarray(returns)
    return {
        f"{prefix}/return_mean": float(r.mean()),
        f"{prefix}/return_std": float(r.std()),
        f"{prefix}/return_min": float(r.min()),
        f"{prefix}/return_max": float(r.max()),
    }


def evaluate_real(
    pool: WorkerPool,
    params: np.ndarray,
    episodes: int,
    max_steps: int,
    record: int,
    progress: bool = False,
    *,
    lockstep: int,
) -> tuple[dict[str, float], list[dict], Episode]:
    """Play tracks 0..episodes-1 of the EVAL stream with the controller and with the random policy (its
    noise from the BASELINE stream). Returns (metrics, per-track rows, the first controller episode with
    its first `record` frames and, when recording, the tokens and codes its agent computed)."""
    tasks = [
        EpisodeTask(
            (Stream.EVAL, i),
            (Stream.EVAL, i),
            max_steps,
            params,
            record if i == 0 else 0,
            keep_tokens=i == 0 and record > 0,
        )
        for i in range(episodes)
    ]
    tasks += [EpisodeTask((Stream.EVAL, i), (Stream.BASELINE, i), max_steps) for i in range(episodes)]
    results = play_episodes(pool, tasks, "evaluate", progress, lockstep=lockstep)
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


def fidelity(
    pool: WorkerPool,
    vae: FSQVAE,
    dream: DreamEnv,
    spec: ControllerSpec,
    panel: Panel,
    tracks: int,
    seed: int,
    progress: bool = False,
    *,
    lockstep: int,
) -> tuple[dict[str, float], list[dict]]:
    """Score every panel controller on the first `tracks` evaluation tracks in the real game and in `dream`
    (its settings, horizon included) started from the first frame of each of those tracks, encoded as its agents
    encoded it. Returns the fidelity metrics and one row per controller (name, real and dream mean returns)."""
    N, R = len(panel.params), tracks
    tasks = [
        EpisodeTask((Stream.EVAL, t), (Stream.EVAL, t), dream.max_steps, p, keep_frames=1)
        for p in panel.params
        for t in range(R)
    ]
    episodes = play_episodes(pool, tasks, "fidelity panel", progress, lockstep=lockstep)
    real = np.array([ep.ret for ep in episodes]).reshape(N, R).mean(axis=1)  # (N * R,) -> (N, R) -> (N,)
    first = encode_fixed_width(vae, np.stack([ep.frames[0] for ep in episodes[:R]]), lockstep)[0]  # (R,) tokens
    panel_dream = DreamEnv(dream.model, dream.fsq, FixedStarts(first), 1, **dream.settings())
    params = torch.from_numpy(panel.params)
    dreamt = panel_dream.evaluate_candidates(spec, params, R * PANEL_DREAMS_PER_TRACK, seed).cpu().double().numpy()
    rows = [
        {"controller": n, "real": float(r), "dream": float(d)}
        for n, r, d in zip(panel.names, real, dreamt, strict=True)
    ]
    return fidelity_metrics(dreamt, real), rows


@torch.no_grad()
def dream_replay(
    world_model: WorldModel, vae: FSQVAE, tokens: np.ndarray, actions: np.ndarray, temperature: float, seed: int
) -> np.ndarray:
    """What the world model dreams from a real episode's first frame under the episode's own actions: the agent's
    tokens of its frames (T,) and actions (>= T - 1, 3) -> (T, 64, 64, 3) uint8 decoded dream frames."""
    T = len(tokens)
    fsq = FSQ(world_model.config.fsq.levels)
    start = torch.from_numpy(tokens[:1])  # (1,)
    env = DreamEnv(world_model, fsq, FixedStarts(start), 1, temperature, max(T - 1, 1), "cpu", done_mode="sample")
    env.reset(seed)
    dreamt = [env.token.clone()]
    for t in range(T - 1):
        env.step(torch.from_numpy(actions[t : t + 1]))
        dreamt.append(env.token.clone())  # a finished dream keeps its last frame
    images = vae.decode_indices(torch.cat(dreamt))  # (T, 3, H, W) in [0, 1]
    return images.permute(0, 2, 3, 1).mul(255).round().clamp(0, 255).to(torch.uint8).numpy()


@torch.no_grad()
def beside_reconstructions(
    vae: FSQVAE, frames: np.ndarray, codes: np.ndarray, dream: np.ndarray | None = None
) -> np.ndarray:
    """(T, 64, 64, 3) uint8 frames and their FSQ codes (T, D) -> (T, 64, 128, 3): each frame (left) beside its
    reconstruction (right), and beside the dreamt frame (T, 64, 64, 3) when given -> (T, 64, 192, 3)."""
    recon = vae.decode_codes(torch.from_numpy(codes))  # (T, 3, H, W) in [0, 1]
    recon = recon.permute(0, 2, 3, 1).mul(255).round().clamp(0, 255).to(torch.uint8).numpy()  # (T, H, W, 3)
    return np.concatenate([frames, recon] + ([] if dream is None else [dream]), axis=2)


def save_gif(frames: np.ndarray, path: Path, scale: int = 3, every: int = 2, fps: float = 50) -> None:
    """(T, H, W, 3) uint8 -> GIF of every `every`-th frame, upscaled `scale`x, at real-game speed."""
    frames = frames[::every].repeat(scale, axis=1).repeat(scale, axis=2)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, frames, extension=".gif", duration=1000 * every / fps, loop=0)
