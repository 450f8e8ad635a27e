"""FastCarRacing must reproduce stock CarRacing-v3 exactly: observations, rewards, flags and info."""

import math
import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import numpy as np
import pytest

from wm.envs import FAST_ID, FastCarRacing, blind, make_car_racing
from wm.envs.fast_car_racing import PANEL_TOP, STATE_H, WINDOW_H


def _steer_brake_actions(seed: int, n: int = 300) -> np.ndarray:
    """Accelerate through the zoom-in (first 50 steps), then hard left, hard braking, hard right, random."""
    rng = np.random.default_rng(seed)
    phases = [
        (60, [0.0, 0.6, 0.0]),
        (50, [-1.0, 0.5, 0.0]),
        (40, [1.0, 0.0, 1.0]),
        (50, [1.0, 1.0, 0.0]),
        (20, [0.0, 0.0, 0.8]),
    ]
    actions = [np.array(a, dtype=np.float32) for count, a in phases for _ in range(count)]
    rest = n - len(actions)
    actions.extend(rng.uniform([-1, 0, 0], [1, 1, 1], size=(rest, 3)).astype(np.float32))
    return np.stack(actions)


def _assert_same_rollout(stock, fast, seed, actions, options=None):
    """Step both envs in lockstep; return the last step's (obs, reward, terminated, truncated, info)."""
    obs_s, info_s = stock.reset(seed=seed, options=options)
    obs_f, info_f = fast.reset(seed=seed, options=options)
    assert np.array_equal(obs_s, obs_f) and info_s == info_f
    for t, action in enumerate(actions):
        out_s = stock.step(action)
        out_f = fast.step(action)
        if not np.array_equal(out_s[0], out_f[0]):
            diff = np.abs(out_s[0].astype(int) - out_f[0].astype(int))
            pytest.fail(f"seed {seed} step {t}: obs differ, max |diff| {diff.max()} at {diff.sum(-1).argmax()}")
        assert out_s[0].dtype == out_f[0].dtype and out_s[0].shape == out_f[0].shape
        assert out_s[1:] == out_f[1:], f"seed {seed} step {t}: {out_s[1:]} != {out_f[1:]}"
        if out_s[2] or out_s[3]:
            break
    return out_s


def test_identical_across_seeds_and_resets():
    # One env pair, reset with different seeds: the per-track geometry cache must follow the new track.
    stock, fast = make_car_racing(fast=False), make_car_racing(fast=True)
    for seed in (0, 1, 2):
        _, _, terminated, truncated, _ = _assert_same_rollout(stock, fast, seed, _steer_brake_actions(seed))
        assert not (terminated or truncated)


def _follow_track(env) -> np.ndarray:
    """Steer towards the track a few tiles ahead at a moderate speed (keeps visiting new tiles)."""
    car = env.unwrapped.car
    track = env.unwrapped.track
    x, y = car.hull.position
    nearest = min(range(len(track)), key=lambda i: (track[i][2] - x) ** 2 + (track[i][3] - y) ** 2)
    _, _, tx, ty = track[(nearest + 4) % len(track)]
    error = (math.atan2(ty - y, tx - x) - math.pi / 2 - car.hull.angle + math.pi) % (2 * math.pi) - math.pi
    speed = math.hypot(*car.hull.linearVelocity)
    return np.array([np.clip(-2 * error, -1, 1), 0.3 if speed < 40 else 0.0, 0.0], dtype=np.float32)


def test_driving_along_the_track():
    # At speed the view sweeps over many tiles, and every tile touched is recoloured by the contact listener.
    stock, fast = make_car_racing(fast=False), make_car_racing(fast=True)
    stock.reset(seed=10)
    fast.reset(seed=10)
    for t in range(400):
        action = _follow_track(stock)
        out_s, out_f = stock.step(action), fast.step(action)
        assert np.array_equal(out_s[0], out_f[0]) and out_s[1:] == out_f[1:], f"step {t}"
    assert stock.unwrapped.tile_visited_count > 60


def test_leaving_the_playfield_terminates_identically():
    # Moderate gas with a slight right steer leaves the track and drives off the playfield (full gas
    # just spins the rear wheels in circles). The frames near the edge show the black void beyond the
    # background square, which exercises the stock-drawn background path.
    stock, fast = make_car_racing(fast=False), make_car_racing(fast=True)
    actions = np.tile(np.array([0.05, 0.4, 0.0], dtype=np.float32), (300, 1))
    obs, reward, terminated, truncated, info = _assert_same_rollout(stock, fast, 0, actions)
    assert terminated and not truncated
    assert reward == -100 and info == {"lap_finished": False}
    world = obs[: STATE_H * PANEL_TOP // WINDOW_H]
    assert (world == 0).all(axis=-1).any(), "the void beyond the playfield should be in view"


def test_blind_steps_exactly_like_the_drawn_game():
    # Driving along the track (tiles visited, rewards) and then off the playfield (termination, -100): a blind
    # env must give the drawn env's rewards, flags and info with all-zero observations, and draw again after.
    drawn, dark = make_car_racing(fast=True), make_car_racing(fast=True)
    drawn.reset(seed=10)
    with blind(dark):
        obs, _ = dark.reset(seed=10)
        assert not obs.any()
        obs[:] = 255  # each observation is the caller's own array, as a drawn one is
        for t in range(300):
            action = _follow_track(drawn)
            out_d, out_b = drawn.step(action), dark.step(action)
            assert out_d[1:] == out_b[1:], f"step {t}"
            assert out_d[0].any() and not out_b[0].any()
    assert drawn.unwrapped.tile_visited_count > 50
    action = np.array([0.0, 0.3, 0.0], dtype=np.float32)
    out_d, out_b = drawn.step(action), dark.step(action)
    assert np.array_equal(out_d[0], out_b[0]) and out_d[1:] == out_b[1:]
    with blind(dark):
        for _ in range(2000):
            out_d, out_b = drawn.step(action), dark.step(action)
            assert out_d[1:] == out_b[1:]
            if out_d[2]:
                break
    assert out_b[2] and out_b[1] == -100, "the car should have left the playfield"


def test_domain_randomize_and_discrete_actions():
    stock = make_car_racing(fast=False, domain_randomize=True)
    fast = make_car_racing(fast=True, domain_randomize=True)
    rng = np.random.default_rng(5)
    actions = rng.uniform([-1, 0, 0], [1, 1, 1], size=(100, 3)).astype(np.float32)
    _assert_same_rollout(stock, fast, 5, actions, options={"randomize": True})

    stock = make_car_racing(fast=False, continuous=False)
    fast = make_car_racing(fast=True, continuous=False)
    _assert_same_rollout(stock, fast, 6, [3] * 40 + [1, 1, 2, 2, 4, 0] * 10)


def test_tall_indicator_bar_falls_back_to_stock_order(monkeypatch):
    # A wheel spinning at 600 rad/s draws its ABS bar above the panel, over the world; the fast path
    # must hand that frame to the stock flip-then-draw order.
    stock, fast = make_car_racing(fast=False), make_car_racing(fast=True)
    action = np.array([0.0, 1.0, 0.0], dtype=np.float32)
    _assert_same_rollout(stock, fast, 7, [action] * 60)
    calls = []
    inner = fast.unwrapped
    original = inner._render_state_stock_order
    monkeypatch.setattr(inner, "_render_state_stock_order", lambda *a: calls.append(1) or original(*a))
    for env in (stock, fast):
        env.unwrapped.car.wheels[2].omega = 600.0
    out_s, out_f = stock.step(action), fast.step(action)
    assert calls, "the fallback path was not taken"
    assert np.array_equal(out_s[0], out_f[0]) and out_s[1:] == out_f[1:]


def test_rgb_array_render_matches():
    stock = make_car_racing(fast=False, render_mode="rgb_array")
    fast = make_car_racing(fast=True, render_mode="rgb_array")
    stock.reset(seed=3)
    fast.reset(seed=3)
    action = np.array([0.3, 0.5, 0.0], dtype=np.float32)
    for t in range(60):
        obs_s, obs_f = stock.step(action)[0], fast.step(action)[0]
        assert np.array_equal(obs_s, obs_f)
        if t % 20 == 0:
            assert np.array_equal(stock.render(), fast.render())


def test_registration_and_wrappers():
    env = gym.make(FAST_ID)
    assert isinstance(env.unwrapped, FastCarRacing)
    assert env.spec.max_episode_steps == 1000
    wrapped = make_car_racing(fast=True, max_episode_steps=20)
    assert isinstance(wrapped, gym.wrappers.TimeLimit)
    assert type(make_car_racing(fast=False).unwrapped) is gym.envs.box2d.car_racing.CarRacing
    wrapped.reset(seed=0)
    action = np.zeros(3, dtype=np.float32)
    truncated = [wrapped.step(action)[3] for _ in range(20)]
    assert truncated == [False] * 19 + [True]
