"""Observation preprocessing shared by collect, evaluate and real-game controller training."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

FRAME_SIZE = 64
# CarRacing's bottom 12 rows are the indicator bar (speed, ABS, steering, gyro). World Models crops
# the frame to its top 84 rows before resizing (hardmaru/WorldModelsExperiments), so the 64x64 frame
# spends its pixels on the road.
CROP_ROWS = 84


def preprocess(obs: np.ndarray) -> np.ndarray:
    """(N, 96, 96, 3) or (96, 96, 3) uint8 observations -> same leading shape x (64, 64, 3) uint8.

    Area averaging (torch `area` interpolation = exact box filter) rather than nearest: the thin road
    edges and the car survive the 84x96 -> 64x64 downscale instead of aliasing. The result is rounded,
    and computed in float64 so it is the same on every machine.
    """
    single = obs.ndim == 3
    x = torch.from_numpy(np.ascontiguousarray(obs[None] if single else obs))  # (N, H, W, C) uint8
    x = x[:, :CROP_ROWS].permute(0, 3, 1, 2).to(torch.float64)  # (N, C, 84, 96)
    x = F.interpolate(x, size=(FRAME_SIZE, FRAME_SIZE), mode="area")  # (N, C, 64, 64)
    out = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, 64, 64, C)
    return out[0] if single else out
