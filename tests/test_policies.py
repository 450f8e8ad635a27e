"""wm/policies.py: the correlated random policy that collects the data and is the evaluation baseline."""

import numpy as np
import pytest

from wm.config import PolicyConfig
from wm.policies import CorrelatedRandomPolicy


def actions_of(cfg: PolicyConfig, seed: int, steps: int) -> np.ndarray:
    policy = CorrelatedRandomPolicy(cfg)
    policy.reset(np.random.default_rng(seed))
    return np.stack([policy(None) for _ in range(steps)])  # (T, 3)


def runs(values: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of equal rows: (start, length) each."""
    change = np.flatnonzero((values[1:] != values[:-1]).any(axis=-1)) + 1
    starts = np.r_[0, change]
    return list(zip(starts.tolist(), np.diff(np.r_[starts, len(values)]).tolist(), strict=True))


@pytest.mark.parametrize(
    "cfg",
    [
        PolicyConfig(hold_min=3, hold_max=6, gas_mean=0.5, brake_prob=0.2),
        PolicyConfig(),  # the defaults: 5..20 steps
    ],
    ids=["3-6", "defaults"],
)
def test_gas_and_brake_are_held_for_hold_min_to_hold_max_steps(cfg):
    """Gas/brake change only at the end of a segment of hold_min..hold_max steps (not every step).

    Two neighbouring segments can draw the same value only where gas is clipped to 0 or 1, so a run of equal
    values is one segment unless its gas sits on a clip bound; such merged runs are only checked for >= hold_min.
    The last run is cut off by the end of the sample and is not checked."""
    steps = 3000
    actions = actions_of(cfg, seed=0, steps=steps)
    held = actions[:, 1:]  # (T, 2) gas, brake
    segments = runs(held)[:-1]
    assert len(segments) > 50
    lengths = [n for _, n in segments]
    assert min(lengths) >= cfg.hold_min > 1  # held for at least hold_min steps: a 1-step hold fails here
    single = [n for s, n in segments if 0.0 < held[s, 0] < 1.0 or held[s, 1] > 0]  # one segment each
    assert len(single) > 0.8 * len(segments)
    assert max(single) <= cfg.hold_max
    # every length in hold_min..hold_max occurs (the range is inclusive at both ends)
    assert set(single) == set(range(cfg.hold_min, cfg.hold_max + 1))
    # the mean segment is about (hold_min + hold_max) / 2 steps
    assert abs(np.mean(single) - (cfg.hold_min + cfg.hold_max) / 2) < 0.1 * cfg.hold_max
    # steering is not held: it moves every step
    assert (np.diff(actions[:, 0]) != 0).mean() > 0.99


def test_hold_of_one_step_changes_every_step():
    actions = actions_of(PolicyConfig(hold_min=1, hold_max=1, gas_mean=0.5), seed=0, steps=200)
    assert (np.diff(actions[:, 1]) != 0).mean() > 0.9


def test_action_ranges_and_brake_segments():
    cfg = PolicyConfig(brake_prob=0.3)
    actions = actions_of(cfg, seed=1, steps=3000)
    assert actions.dtype == np.float32 and actions.shape == (3000, 3)
    steer, gas, brake = actions.T
    assert (np.abs(steer) <= 1).all() and ((gas >= 0) & (gas <= 1)).all()
    assert ((brake == 0) | ((brake >= 0.2) & (brake <= 1))).all()
    assert not ((gas > 0) & (brake > 0)).any()  # never gas and brake at once
    braking = (brake > 0).mean()
    assert 0.15 < braking < 0.45  # about brake_prob of the segments brake
    assert abs(gas[brake == 0].mean() - cfg.gas_mean) < 0.05  # gas bias
    assert np.abs(np.diff(steer)).mean() < 0.2  # a correlated walk, not i.i.d. uniform steering (mean step ~0.67)
    assert steer.std() > 0.1  # but it does steer


def test_no_brake_and_no_steer_settings():
    actions = actions_of(PolicyConfig(brake_prob=0.0, steer_sigma=0.0), seed=2, steps=500)
    assert (actions[:, 2] == 0).all() and (actions[:, 0] == 0).all()


def test_reset_starts_a_fresh_episode_from_its_rng():
    """The actions depend only on the episode's RNG: not on what the policy played before (workers reuse it)."""
    cfg = PolicyConfig()
    policy = CorrelatedRandomPolicy(cfg)
    assert policy.needs_frames is False
    policy.reset(np.random.default_rng(5))
    first = np.stack([policy(None) for _ in range(37)])  # stops in the middle of a hold segment
    policy.reset(np.random.default_rng(5))
    again = np.stack([policy(None) for _ in range(37)])
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, actions_of(cfg, seed=5, steps=37))  # a fresh policy, same RNG
    policy.reset(np.random.default_rng(6))
    assert not np.array_equal(first, np.stack([policy(None) for _ in range(37)]))
