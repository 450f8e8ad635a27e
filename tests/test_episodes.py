"""wm/episodes.py: the one episode loop (collection, real-game fitness, evaluation, `wm play`) and its workers."""

import numpy as np
import pytest

from wm.config import parse_params
from wm.episodes import ALL_FRAMES, Episode, EpisodeTask, EpisodeWorker, init_worker, make_env, play_task, run_episode
from wm.frames import preprocess
from wm.policies import CorrelatedRandomPolicy
from wm.seeding import Stream, numpy_rng, track_seed

from .conftest import tiny_params

TRACK = 11


class Spy:
    """A policy that records what it is given and drives with a fixed action (plus a little noise)."""

    def __init__(self, needs_frames: bool):
        self.needs_frames = needs_frames
        self.frames: list = []
        self.resets = 0

    def reset(self, rng):
        self.rng, self.resets = rng, self.resets + 1

    def __call__(self, frame):
        self.frames.append(frame)
        return np.array([self.rng.uniform(-0.3, 0.3), 0.6, 0.0], np.float32)


@pytest.fixture(scope="module")
def cfg():
    return parse_params(tiny_params())


@pytest.fixture(scope="module")
def env(cfg):
    return make_env(cfg, fast=True)


def manual_episode(env, actions: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The raw observations (T+1, 96, 96, 3) and rewards of replaying `actions` on track `seed` by hand."""
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for a in actions:
        obs, reward, *_ = env.step(a)
        observations.append(obs)
        rewards.append(reward)
    return np.stack(observations), np.asarray(rewards, np.float32)


@pytest.mark.parametrize("needs_frames", [False, True])
def test_all_frames_are_the_preprocessed_observations(env, needs_frames):
    """keep_frames=ALL_FRAMES keeps the T+1 frames, each the preprocessed observation (the last one after the last
    action included), whether the policy reads frames (computed every step) or not (computed at the end)."""
    policy, steps = Spy(needs_frames), 25
    ep = run_episode(env, policy, TRACK, np.random.default_rng(3), max_steps=steps, keep_frames=ALL_FRAMES)
    assert ep.steps == steps and ep.track_seed == TRACK and policy.resets == 1
    assert ep.frames.shape == (steps + 1, 64, 64, 3) and ep.frames.dtype == np.uint8
    assert ep.actions.shape == (steps, 3) and ep.actions.dtype == np.float32
    assert ep.rewards.dtype == np.float32 and ep.terminated.dtype == bool and ep.truncated.dtype == bool
    observations, rewards = manual_episode(env, ep.actions, TRACK)
    np.testing.assert_array_equal(ep.frames, preprocess(observations))
    np.testing.assert_array_equal(ep.rewards, rewards)
    assert ep.ret == pytest.approx(float(rewards.sum(dtype=np.float64)))
    if needs_frames:  # the policy saw frame_t when choosing action_t
        np.testing.assert_array_equal(np.stack(policy.frames), ep.frames[:-1])
    else:  # a policy that does not read frames is not given any
        assert policy.frames == [None] * steps
    # the frames change over the episode (the zoom-in animation, the car moves)
    assert np.abs(ep.frames[0].astype(int) - ep.frames[-1].astype(int)).mean() > 1


@pytest.mark.parametrize("needs_frames", [False, True])
def test_keep_some_or_no_frames(env, needs_frames):
    full = run_episode(env, Spy(needs_frames), TRACK, np.random.default_rng(0), 12, ALL_FRAMES)
    some = run_episode(env, Spy(needs_frames), TRACK, np.random.default_rng(0), 12, keep_frames=5)
    np.testing.assert_array_equal(some.frames, full.frames[:5])
    np.testing.assert_array_equal(some.actions, full.actions)
    exact = run_episode(env, Spy(needs_frames), TRACK, np.random.default_rng(0), 12, keep_frames=13)
    np.testing.assert_array_equal(exact.frames, full.frames)
    none = run_episode(env, Spy(needs_frames), TRACK, np.random.default_rng(0), 12)
    assert none.frames is None
    np.testing.assert_array_equal(none.rewards, full.rewards)


@pytest.mark.parametrize("needs_frames", [False, True])
def test_a_policy_that_reads_no_frames_plays_blind(env, needs_frames, monkeypatch):
    # Nothing drawn when no frame is read or kept (the evaluation's random baseline), and the same episode.
    drawn = run_episode(env, Spy(needs_frames), TRACK, np.random.default_rng(0), 120, keep_frames=1)
    draws = []
    inner = env.unwrapped
    original = inner._render_road
    monkeypatch.setattr(inner, "_render_road", lambda *a: draws.append(1) or original(*a))
    played = run_episode(env, Spy(needs_frames), TRACK, np.random.default_rng(0), 120)
    assert len(draws) == (121 if needs_frames else 0)  # reset and every step
    assert played.ret == drawn.ret and played.ret > 0
    for name in ("actions", "rewards", "terminated", "truncated"):
        assert np.array_equal(getattr(played, name), getattr(drawn, name)), name
    assert not inner.blind


def test_max_steps_truncates(env):
    ep = run_episode(
        env, CorrelatedRandomPolicy(parse_params({}).collect.policy), TRACK, numpy_rng(0, Stream.COLLECT, 0), 20
    )
    assert ep.steps == 20
    assert ep.truncated[-1] and not ep.truncated[:-1].any() and not ep.terminated.any()


def test_env_time_limit_truncates():
    """The env's own limit (env.max_episode_steps) ends the episode before a higher max_steps."""
    env = make_env(parse_params(tiny_params(env={"max_episode_steps": 10})), fast=True)
    ep = run_episode(env, Spy(False), TRACK, np.random.default_rng(0), max_steps=50, keep_frames=ALL_FRAMES)
    assert ep.steps == 10 and len(ep.frames) == 11
    assert ep.truncated.tolist() == [False] * 9 + [True] and not ep.terminated.any()


def test_on_step_sees_every_reward(env):
    seen: list[float] = []
    ep = run_episode(env, Spy(False), TRACK, np.random.default_rng(0), 15, on_step=seen.append)
    assert all(isinstance(r, float) for r in seen)
    np.testing.assert_array_equal(np.float32(seen), ep.rewards)  # the env's rewards, stored as float32


def test_episode_is_a_function_of_track_and_noise(env):
    policy = CorrelatedRandomPolicy(parse_params({}).collect.policy)

    def play(track, noise):
        return run_episode(env, policy, track, np.random.default_rng(noise), 20, ALL_FRAMES)

    a, b = play(TRACK, 0), play(TRACK, 0)
    for key in ("actions", "rewards", "terminated", "truncated", "frames"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    other_noise, other_track = play(TRACK, 1), play(TRACK + 1, 0)
    assert not np.array_equal(a.actions, other_noise.actions)
    np.testing.assert_array_equal(a.frames[0], other_noise.frames[0])  # same track, same first frame
    np.testing.assert_array_equal(a.actions, other_track.actions)  # same noise, same actions
    assert not np.array_equal(a.frames[0], other_track.frames[0])  # another track


def test_episode_properties():
    ep = Episode(
        actions=np.zeros((3, 3), np.float32),
        rewards=np.array([0.1, 0.2, 0.3], np.float32),
        terminated=np.zeros(3, bool),
        truncated=np.array([False, False, True]),
        track_seed=4,
    )
    assert ep.steps == 3 and isinstance(ep.ret, float)
    assert ep.ret == float(np.float32(0.1)) + float(np.float32(0.2)) + float(np.float32(0.3))
    with pytest.raises(AssertionError):
        Episode(np.zeros((3, 3), np.float32), np.zeros(2, np.float32), np.zeros(3, bool), np.zeros(3, bool), 0)
    with pytest.raises(AssertionError):  # at most T+1 frames
        Episode(
            np.zeros((3, 3)),
            np.zeros(3),
            np.zeros(3, bool),
            np.zeros(3, bool),
            0,
            np.zeros((5, 64, 64, 3), np.uint8),
        )


def test_worker_plays_the_named_track_with_the_named_noise(cfg, env):
    """A task names its track and noise stream; the worker turns them into the env seed and the policy's RNG
    from the master seed, so an episode does not depend on the worker that plays it."""
    task = EpisodeTask(track=(Stream.EVAL, 3), noise=(Stream.BASELINE, 3), max_steps=15, keep_frames=ALL_FRAMES)
    init_worker(cfg, True)
    ep = play_task(task)
    assert ep.track_seed == track_seed(cfg.seed, Stream.EVAL, 3)
    expected = run_episode(
        env,
        CorrelatedRandomPolicy(cfg.collect.policy),
        ep.track_seed,
        numpy_rng(cfg.seed, Stream.BASELINE, 3),
        15,
        ALL_FRAMES,
    )
    for key in ("actions", "rewards", "truncated", "frames"):
        np.testing.assert_array_equal(getattr(ep, key), getattr(expected, key))
    # a fresh worker, or one that played other tasks first, plays it the same
    worker = EpisodeWorker(cfg, fast_env=False)
    worker.play(EpisodeTask((Stream.COLLECT, 0), (Stream.COLLECT, 0), 7))
    again = worker.play(task)
    np.testing.assert_array_equal(again.actions, ep.actions)
    np.testing.assert_array_equal(again.frames, ep.frames)  # the stock renderer draws the same pixels
    with pytest.raises(AssertionError, match="without models"):
        worker.play(EpisodeTask((Stream.EVAL, 0), (Stream.EVAL, 0), 5, params=np.zeros(15, np.float32)))


def test_hopeless_episodes_end_after_steps_without_reward():
    """hopeless_steps truncates an episode after that many consecutive steps of negative reward (a car that
    stands still pays -0.1 a step and gains no tile)."""

    class Idle:
        needs_frames = False

        def reset(self, rng):
            pass

        def __call__(self, frame):
            return np.zeros(3, np.float32)

    env = make_env(parse_params(tiny_params()), True)
    full = run_episode(env, Idle(), 3, None, 200)
    ended = run_episode(env, Idle(), 3, None, 200, hopeless_steps=30)
    assert full.steps == 200 and ended.steps < 200 and ended.truncated[-1] and not ended.terminated[-1]
    tail = ended.rewards[-30:]
    assert (tail < 0).all() and (ended.rewards[-31] >= 0 or ended.steps == 30)  # exactly 30 in a row
    np.testing.assert_array_equal(ended.rewards, full.rewards[: ended.steps])  # the same episode, cut short
