"""The one episode loop of the real game, shared by data collection, real-game CMA-ES and evaluation, and the
worker-process plumbing that runs many episodes in parallel (wm/parallel.py).

An episode is named by a track (a seed stream and index: wm/seeding.py) and the stream of its policy noise, so
its contents depend only on those and on the policy, never on which worker played it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gymnasium
import numpy as np
from tqdm import tqdm

from wm.config import WorldModelAgentConfig
from wm.envs import make_car_racing
from wm.frames import preprocess
from wm.policies import CorrelatedRandomPolicy, Policy
from wm.seeding import Stream, numpy_rng, track_seed

if TYPE_CHECKING:
    from wm.parallel import WorkerPool

ALL_FRAMES = sys.maxsize  # keep_frames value that keeps every frame, the final observation included


@dataclass
class Episode:
    """One episode of T steps in the real game."""

    actions: np.ndarray  # (T, 3) float32, action_t taken at frame_t
    rewards: np.ndarray  # (T,) float32
    terminated: np.ndarray  # (T,) bool: the env ended the episode at step t
    truncated: np.ndarray  # (T,) bool: a step limit ended it
    track_seed: int
    frames: np.ndarray | None = None  # (K, 64, 64, 3) uint8: the first K <= T+1 preprocessed frames, if kept

    def __post_init__(self) -> None:
        T = len(self.actions)
        assert self.actions.shape == (T, 3) and all(
            len(a) == T for a in (self.rewards, self.terminated, self.truncated)
        )
        assert self.frames is None or (self.frames.dtype == np.uint8 and len(self.frames) <= T + 1)

    @property
    def steps(self) -> int:
        return len(self.actions)

    @property
    def ret(self) -> float:
        """The episode's return (float64 sum of the float32 rewards)."""
        return float(self.rewards.sum(dtype=np.float64))


def make_env(cfg: WorldModelAgentConfig, fast: bool) -> gymnasium.Env:
    """The real game, truncated by gymnasium at `env.max_episode_steps` (episodes may set a lower limit)."""
    return make_car_racing(fast=fast, max_episode_steps=cfg.env.max_episode_steps)


def run_episode(
    env: gymnasium.Env,
    policy: Policy,
    seed: int,
    rng: np.random.Generator,
    max_steps: int,
    keep_frames: int = 0,
    on_step: Callable[[float], None] | None = None,
    hopeless_steps: int = 0,
) -> Episode:
    """Play one episode on track `seed`, at most `max_steps` steps; keep the first `keep_frames` frames;
    call `on_step(reward)` after every step (e.g. to render); end (truncate) the episode after
    `hopeless_steps` consecutive steps with negative reward (no new tile; 0: never; for training only).

    A frame is preprocessed only where it is used: every step for a policy that reads frames, otherwise
    the kept raw observations are preprocessed in one batch at the end."""
    obs, _ = env.reset(seed=seed)
    policy.reset(rng)
    pre = policy.needs_frames
    kept, actions, rewards, terminated, truncated = [], [], [], [], []  # kept: frames if `pre`, else raw obs
    done, no_reward = False, 0
    while not done:
        frame = preprocess(obs) if pre else None  # (64, 64, 3) uint8
        if len(actions) < keep_frames:
            kept.append(frame if pre else obs)
        action = policy(frame)
        obs, reward, term, trunc, _ = env.step(action)
        actions.append(action)
        rewards.append(reward)
        terminated.append(term)
        no_reward = no_reward + 1 if reward < 0 else 0
        truncated.append(trunc or len(actions) >= max_steps or 0 < hopeless_steps <= no_reward)
        done = terminated[-1] or truncated[-1]
        if on_step is not None:
            on_step(float(reward))
    if len(actions) < keep_frames:  # the observation after the last action completes the last transition
        kept.append(preprocess(obs) if pre else obs)
    frames = None if not kept else np.stack(kept) if pre else preprocess(np.stack(kept))
    return Episode(
        actions=np.stack(actions).astype(np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminated=np.asarray(terminated, dtype=bool),
        truncated=np.asarray(truncated, dtype=bool),
        track_seed=seed,
        frames=frames,
    )


@dataclass(frozen=True)
class EpisodeTask:
    """One episode for a worker: track (stream, index), policy-noise (stream, index), and the policy: the
    random data policy (params None) or the agent with these controller params."""

    track: tuple[Stream, int]
    noise: tuple[Stream, int]
    max_steps: int
    params: np.ndarray | None = None
    keep_frames: int = 0
    hopeless_steps: int = 0


class EpisodeWorker:
    """What one worker process holds: the env, the random policy and (given models) an agent."""

    def __init__(self, cfg: WorldModelAgentConfig, fast_env: bool, models=None):
        self.cfg = cfg
        self.env = make_env(cfg, fast_env)
        self.random_policy = CorrelatedRandomPolicy(cfg.collect.policy)
        self.agent = None if models is None else models.build()

    def play(self, task: EpisodeTask) -> Episode:
        policy = self.random_policy
        if task.params is not None:
            assert self.agent is not None, "this worker was built without models"
            self.agent.set_params(task.params)
            policy = self.agent
        seed = track_seed(self.cfg.seed, *task.track)
        rng = numpy_rng(self.cfg.seed, *task.noise)
        return run_episode(self.env, policy, seed, rng, task.max_steps, task.keep_frames, None, task.hopeless_steps)


_worker: dict[str, EpisodeWorker] = {}


def init_worker(cfg: WorldModelAgentConfig, fast_env: bool, models=None) -> None:
    """WorkerPool initializer: `models` is a picklable wm.agent.AgentModels, or None for the random policy."""
    _worker["w"] = EpisodeWorker(cfg, fast_env, models)


def play_task(task: EpisodeTask) -> Episode:
    return _worker["w"].play(task)


def play_episodes(pool: WorkerPool, tasks: list[EpisodeTask], desc: str, progress: bool = False) -> list[Episode]:
    """Play `tasks` on the pool's workers (results in task order), with a progress bar of episodes and real-game
    steps/s when `progress` (a CMA-ES generation in the real game, an evaluation, a round's collection)."""
    episodes, steps, start = [], 0, time.perf_counter()
    with tqdm(total=len(tasks), unit="ep", desc=desc, disable=not progress, mininterval=1.0, leave=False) as bar:
        for episode in pool.map(play_task, tasks):
            episodes.append(episode)
            steps += episode.steps
            bar.update(1)
            bar.set_postfix(steps_per_s=f"{steps / (time.perf_counter() - start):.0f}")
    return episodes
