"""Policies: what picks the action in an episode of the real game (wm/episodes.py runs the episode).

A policy is reset with the episode's own RNG and then called once per step with the preprocessed 64x64 frame
(None when `needs_frames` is False: the frame is not computed for it). Two kinds exist: the correlated random
policy below, which collects data and is the baseline of evaluation, and the trained agent (wm/agent.py).

The random policy. I.i.d. uniform actions barely move the car: gas and brake average out and steering
jitters around 0, so a dataset of them shows the start of the track and little else (in a public
implementation of this design the VAE then used 6 codes). We use temporally correlated actions instead:
- steering follows a mean-reverting random walk (an Ornstein-Uhlenbeck-like process, cf. the brownian
  actions of ctallec/world-models) so the car drifts through long curves and sometimes off the road;
- gas/brake are held for random segments of `hold_min..hold_max` steps, with gas drawn around
  `gas_mean` (a gas bias, so the car actually travels along the track) and an occasional brake segment.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from wm.config import PolicyConfig


class Policy(Protocol):
    needs_frames: bool  # whether __call__ reads the frame

    def reset(self, rng: np.random.Generator) -> None:
        """Start an episode; `rng` is the episode's own stream (wm/seeding.py)."""

    def __call__(self, frame: np.ndarray | None) -> np.ndarray:
        """(64, 64, 3) uint8 frame (or None) -> action (3,) float32: steering, gas, brake."""


class CorrelatedRandomPolicy:
    needs_frames = False

    def __init__(self, cfg: PolicyConfig):
        self.cfg = cfg
        self.reset(np.random.default_rng(0))

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.steer, self.gas, self.brake, self.hold_left = 0.0, 0.0, 0.0, 0

    def __call__(self, frame: np.ndarray | None = None) -> np.ndarray:
        cfg, rng = self.cfg, self.rng
        self.steer = float(np.clip(cfg.steer_decay * self.steer + cfg.steer_sigma * rng.normal(), -1.0, 1.0))
        if self.hold_left == 0:
            self.hold_left = int(rng.integers(cfg.hold_min, cfg.hold_max + 1))
            if rng.random() < cfg.brake_prob:
                self.gas, self.brake = 0.0, float(rng.uniform(0.2, 1.0))
            else:
                self.gas, self.brake = float(np.clip(rng.normal(cfg.gas_mean, 0.25), 0.0, 1.0)), 0.0
        self.hold_left -= 1
        return np.array([self.steer, self.gas, self.brake], dtype=np.float32)
