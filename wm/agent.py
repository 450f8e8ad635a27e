"""The agent in the real game: frame -> FSQ code (-> world-model hidden) -> controller -> action.

Used by real-game CMA-ES fitness (wm/es.py) and by evaluation (wm/evaluate.py), in worker processes:
each worker builds one `Agent` from CPU state dicts and plays whole episodes with one torch thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium
import numpy as np
import torch

from wm.config import WorldModelAgentConfig, vae_fingerprint, wm_fingerprint
from wm.envs import make_car_racing
from wm.frames import preprocess
from wm.models.controller import ControllerSpec, make_controller_spec
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel
from wm.policies import CorrelatedRandomPolicy
from wm.training import load_trained
from wm.utils import Stream, track_seed


@dataclass
class Episode:
    ret: float
    steps: int
    frames: np.ndarray | None = None  # (T, 64, 64, 3) uint8 when recorded
    recons: np.ndarray | None = None  # (T, 64, 64, 3) uint8 reconstructions of the same frames


class Agent:
    """The V (FSQ-VAE encoder), optional M (world model, for h) and C (controller) of World Models."""

    def __init__(self, cfg: WorldModelAgentConfig, vae_state: dict, wm_state: dict | None):
        torch.set_num_threads(1)  # one process per core: intra-op threads would only contend
        self.cfg = cfg
        self.spec: ControllerSpec = make_controller_spec(cfg.ctrl, cfg.fsq, cfg.wm)
        self.vae = FSQVAE(cfg.fsq, cfg.vae).eval()
        self.vae.load_state_dict(vae_state)
        self.wm = None
        if cfg.ctrl.use_hidden:
            assert wm_state is not None, "ctrl.use_hidden needs the world model"
            self.wm = WorldModel(cfg.wm, cfg.fsq).eval()
            self.wm.load_state_dict(wm_state)
        self.env: gymnasium.Env | None = None
        self.env_steps = 0

    def _env(self, max_steps: int) -> gymnasium.Env:
        if self.env is None or self.env_steps != max_steps:
            self.env = make_car_racing(fast=self.cfg.env.fast, max_episode_steps=max_steps)
            self.env_steps = max_steps
        return self.env

    @torch.no_grad()
    def play(self, params: np.ndarray | None, seed: int, max_steps: int, record: int = 0) -> Episode:
        """One episode on track `seed`. params None plays the correlated random data policy instead
        (the baseline), seeded by the track seed. `record` > 0 keeps that many frames and their
        reconstructions."""
        env = self._env(min(max_steps, self.cfg.env.max_episode_steps))
        obs, _ = env.reset(seed=seed)
        theta = None if params is None else torch.as_tensor(params, dtype=torch.float32)[None]  # (1, P)
        random_policy = CorrelatedRandomPolicy(self.cfg.collect.policy, np.random.default_rng(seed))
        state = None if self.wm is None else self.wm.initial_state(1)
        ret, t, frames, recons, done = 0.0, 0, [], [], False
        while not done:
            # the random baseline needs frames only for a recording
            frame = preprocess(obs) if theta is not None or t < record else None  # (64, 64, 3) uint8
            if theta is None:
                action = random_policy()
            else:
                token, z = self.vae.encode(torch.from_numpy(frame)[None])  # (1,), (1, D)
                h = None if self.wm is None else WorldModel.hidden_of(state)  # (1, H)
                act = self.spec.act(theta, self.spec.observation(z, h))  # (1, 3)
                if self.wm is not None:
                    _, _, _, state = self.wm.step(token, act, state)
                action = act[0].numpy()
                if t < record:
                    recons.append(self.vae.decode_codes(z))
            if t < record:
                frames.append(frame)
            obs, reward, terminated, truncated, _ = env.step(action)
            ret += float(reward)
            t += 1
            done = terminated or truncated
        if not recons:
            return Episode(ret, t, np.stack(frames) if frames else None)
        rec = torch.cat(recons).permute(0, 2, 3, 1).mul(255).round().clamp(0, 255).to(torch.uint8).numpy()
        return Episode(ret, t, np.stack(frames), rec)


def load_upstream(cfg: WorldModelAgentConfig, vae: Path, world_model: Path) -> tuple[dict, dict]:
    """CPU state dicts of the trained VAE and world model (their best validation epochs), refusing
    checkpoints trained under other params."""
    return (
        load_trained(vae, vae_fingerprint(cfg), "train_vae")["best_model"],
        load_trained(world_model, wm_fingerprint(cfg), "train_wm")["best_model"],
    )


# Worker-process plumbing: one Agent per process, built once by the pool initializer.
_agent: dict = {}


def init_worker(cfg: WorldModelAgentConfig, vae_state: dict, wm_state: dict | None) -> None:
    _agent["agent"] = Agent(cfg, vae_state, wm_state)


def play_task(task: tuple[np.ndarray | None, int, int, int]) -> Episode:
    params, seed, max_steps, record = task
    return _agent["agent"].play(params, seed, max_steps, record)


def stream_seeds(master: int, stream: Stream, start: int, count: int) -> list[int]:
    return [track_seed(master, stream, i) for i in range(start, start + count)]
