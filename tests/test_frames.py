"""wm/frames.py: the 84x96 -> 64x64 area downscale equals the float64 `area` interpolation, byte for byte."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wm.envs import make_car_racing
from wm.frames import CROP_ROWS, FRAME_SIZE, box_matrix, preprocess


def area_reference(obs: np.ndarray) -> np.ndarray:
    """(N, 96, 96, 3) uint8 -> (N, 64, 64, 3): torch's adaptive average pooling in float64, rounded half to even
    (the implementation that wm/frames.py replaced; the data of earlier runs was made with it)."""
    x = torch.from_numpy(obs[:, :CROP_ROWS]).permute(0, 3, 1, 2).to(torch.float64)  # (N, C, 84, 96)
    x = F.interpolate(x, size=(FRAME_SIZE, FRAME_SIZE), mode="area")  # (N, C, 64, 64)
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_box_windows_are_adaptive_pooling_windows():
    rows = box_matrix(CROP_ROWS, FRAME_SIZE)
    assert rows.shape == (64, 84) and set(rows.sum(1)) == {2.0, 3.0}  # 84 rows -> boxes of 2 or 3
    assert (box_matrix(96, 64).sum(1) == 2).all()  # 96 columns -> pairs, overlapping every other one
    assert (rows[:, 0] == [1] + [0] * 63).all() and (rows[:, -1] == [0] * 63 + [1]).all()


@pytest.mark.parametrize("kind", ["uniform", "ties", "extremes"])
def test_equals_float64_area_interpolation(kind):
    rng = np.random.default_rng(0)
    shape = (256, 96, 96, 3)
    if kind == "uniform":
        obs = rng.integers(0, 256, shape, dtype=np.uint8)
    elif kind == "ties":  # few distinct values: many box sums fall exactly half way between two integers
        obs = (rng.integers(0, 2, shape) * rng.integers(1, 256, (256, 1, 1, 1))).astype(np.uint8)
    else:
        obs = rng.choice(np.array([0, 1, 2, 3, 127, 128, 254, 255], np.uint8), shape)
    expected = area_reference(obs)
    np.testing.assert_array_equal(preprocess(obs), expected)
    np.testing.assert_array_equal(preprocess(obs[7]), expected[7])  # a single (96, 96, 3) frame


def test_equals_float64_area_interpolation_on_game_frames():
    env = make_car_racing(fast=True)
    obs, _ = env.reset(seed=3)
    frames = [obs]
    for t in range(60):
        obs, *_ = env.step(np.array([0.3 * np.sin(t / 7), 0.5, 0.0], np.float32))
        frames.append(obs)
    env.close()
    frames = np.stack(frames)
    np.testing.assert_array_equal(preprocess(frames), area_reference(frames))
