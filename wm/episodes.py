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
import torch
from tqdm import tqdm

from wm.config import WorldModelAgentConfig
from wm.envs import blind, make_car_racing
from wm.frames import preprocess
from wm.policies import CorrelatedRandomPolicy, Policy
from wm.seeding import Stream, numpy_rng, track_seed

if TYPE_CHECKING:
    from wm.agent import Agent
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
    tokens: np.ndarray | None = None  # (T+1,) int64: the agent's token of every frame, the last one included
    codes: np.ndarray | None = None  # (T+1, D) float32: their FSQ codes (both only if kept)

    def __post_init__(self) -> None:
        T = len(self.actions)
        assert self.actions.shape == (T, 3) and all(
            len(a) == T for a in (self.rewards, self.terminated, self.truncated)
        )
        assert self.frames is None or (self.frames.dtype == np.uint8 and len(self.frames) <= T + 1)
        assert (self.tokens is None) == (self.codes is None)
        assert self.tokens is None or (self.tokens.shape == (T + 1,) and len(self.codes) == T + 1)

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


class _Recorder:
    """One episode's record as it is played: kept frames, actions, rewards, done flags and the count of steps
    without reward. A frame is preprocessed only where it is used: every step for a policy that reads frames
    (`pre`), otherwise the kept raw observations are preprocessed in one batch at the end. The agent's tokens
    and codes, when kept, are added by `run_agent_episodes` (`encoded`)."""

    def __init__(self, obs: np.ndarray, seed: int, max_steps: int, keep_frames: int, hopeless_steps: int, pre: bool):
        self.obs, self.seed, self.max_steps, self.keep_frames = obs, seed, max_steps, keep_frames
        self.hopeless_steps, self.pre = hopeless_steps, pre
        self.kept: list[np.ndarray] = []  # frames if `pre`, else raw observations
        self.actions, self.rewards, self.terminated, self.truncated = [], [], [], []
        self.tokens: list[torch.Tensor] = []  # (1,) int64 each
        self.codes: list[torch.Tensor] = []  # (1, D) float32 each
        self.no_reward = 0

    def encoded(self, tokens: torch.Tensor, codes: torch.Tensor) -> None:
        """The agent's token (1,) and code (1, D) of the current frame."""
        self.tokens.append(tokens)
        self.codes.append(codes)

    def frame(self) -> np.ndarray | None:
        """The current observation as the policy sees it: (64, 64, 3) uint8, or None for a blind policy."""
        frame = preprocess(self.obs) if self.pre else None
        if len(self.actions) < self.keep_frames:
            self.kept.append(frame if self.pre else self.obs)
        return frame

    def record(self, action: np.ndarray, obs: np.ndarray, reward: float, term: bool, trunc: bool) -> bool:
        """One env step's outcome; returns whether the episode is over."""
        self.obs = obs
        self.actions.append(action)
        self.rewards.append(reward)
        self.terminated.append(term)
        self.no_reward = self.no_reward + 1 if reward < 0 else 0
        self.truncated.append(trunc or len(self.actions) >= self.max_steps or 0 < self.hopeless_steps <= self.no_reward)
        return self.terminated[-1] or self.truncated[-1]

    def finish(self) -> Episode:
        if len(self.actions) < self.keep_frames:  # the observation after the last action completes the last step
            self.kept.append(preprocess(self.obs) if self.pre else self.obs)
        frames = None if not self.kept else np.stack(self.kept) if self.pre else preprocess(np.stack(self.kept))
        tokens = codes = None
        if self.tokens:
            tokens, codes = torch.cat(self.tokens).numpy(), torch.cat(self.codes).numpy()  # (T+1,), (T+1, D)
        return Episode(
            actions=np.stack(self.actions).astype(np.float32),
            rewards=np.asarray(self.rewards, dtype=np.float32),
            terminated=np.asarray(self.terminated, dtype=bool),
            truncated=np.asarray(self.truncated, dtype=bool),
            track_seed=self.seed,
            frames=frames,
            tokens=tokens,
            codes=codes,
        )


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
    `hopeless_steps` consecutive steps with negative reward (no new tile; 0: never; for training only)."""
    # A policy that reads no frames, with none kept, plays blind: the fast env skips drawing, most of a step
    with blind(env, not policy.needs_frames and keep_frames == 0):
        obs, _ = env.reset(seed=seed)
        policy.reset(rng)
        rec = _Recorder(obs, seed, max_steps, keep_frames, hopeless_steps, policy.needs_frames)
        done = False
        while not done:
            action = policy(rec.frame())
            obs, reward, term, trunc, _ = env.step(action)
            done = rec.record(action, obs, reward, term, trunc)
            if on_step is not None:
                on_step(float(reward))
    return rec.finish()


def run_agent_episodes(
    envs: list[gymnasium.Env], agent: Agent, params: np.ndarray, seeds: list[int], tasks: list[EpisodeTask]
) -> list[Episode]:
    """Play len(envs) agent episodes in lockstep, one per env: row k of `params` (K, P) drives track seeds[k]
    under tasks[k]'s step limit, kept frames, kept tokens and hopeless steps. Each step encodes the frames of
    all running episodes in one VAE batch (and one world-model step): per-frame work, not the env, bounded the
    real game with one frame at a time. Every VAE batch has the agent's fixed width (`Agent.encode`), so an
    episode equals the one `run_episode` plays alone, bit for bit (tested). Kept tokens are the ones the agent
    acted on, and the final observations' at the end."""
    recs = []
    for env, seed, task in zip(envs, seeds, tasks, strict=True):
        obs, _ = env.reset(seed=seed)
        recs.append(_Recorder(obs, seed, task.max_steps, task.keep_frames, task.hopeless_steps, pre=True))
    weights = torch.as_tensor(params, dtype=torch.float32)  # (K, P)
    running, state = list(range(len(recs))), agent.initial_state(len(recs))
    keep = [k for k, task in enumerate(tasks) if task.keep_tokens]
    while running:
        frames = np.stack([recs[k].frame() for k in running])  # (K', 64, 64, 3)
        tokens, z = agent.encode(frames)  # (K',), (K', D)
        actions, state = agent.act_many(tokens, z, weights[running], state)  # (K', 3)
        still = []
        for i, k in enumerate(running):
            if tasks[k].keep_tokens:
                recs[k].encoded(tokens[i : i + 1], z[i : i + 1])
            obs, reward, term, trunc, _ = envs[k].step(actions[i])
            if not recs[k].record(actions[i], obs, reward, term, trunc):
                still.append(i)
        if len(still) < len(running):  # drop ended episodes' rows, the LSTM state's too: (1, K', H)
            running = [running[i] for i in still]
            state = None if state is None else tuple(x[:, still] for x in state)
    if keep:  # the observation after each last action: a data episode's T+1-th frame
        tokens, z = agent.encode(np.stack([preprocess(recs[k].obs) for k in keep]))  # (K'',), (K'', D)
        for i, k in enumerate(keep):
            recs[k].encoded(tokens[i : i + 1], z[i : i + 1])
    return [rec.finish() for rec in recs]


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
    keep_tokens: bool = False  # the agent's tokens and codes of every frame (a round's data: no re-encoding)

    def __post_init__(self) -> None:
        assert self.params is not None or not self.keep_tokens, "only an agent's episode has tokens to keep"


class EpisodeWorker:
    """What one worker process holds: its envs, the random policy and (given models) an agent."""

    def __init__(self, cfg: WorldModelAgentConfig, fast_env: bool, models=None):
        self.cfg, self.fast_env = cfg, fast_env
        self.envs = [make_env(cfg, fast_env)]
        self.random_policy = CorrelatedRandomPolicy(cfg.collect.policy)
        self.agent = None if models is None else models.build()

    @property
    def env(self) -> gymnasium.Env:
        return self.envs[0]

    def play(self, task: EpisodeTask) -> Episode:
        return self.play_many([task])[0]

    def play_many(self, tasks: list[EpisodeTask]) -> list[Episode]:
        """The tasks' episodes in order: the agent's in lockstep (one env each; a lone one is a lockstep of one,
        which plays as `run_episode` does), the random policy's one by one (it reads no frames, so there is
        nothing to batch)."""
        agent = [i for i, t in enumerate(tasks) if t.params is not None]
        played = {}
        if agent:
            assert self.agent is not None, "this worker was built without models"
            while len(self.envs) < len(agent):
                self.envs.append(make_env(self.cfg, self.fast_env))
            seeds = [track_seed(self.cfg.seed, *tasks[i].track) for i in agent]
            params = np.stack([tasks[i].params for i in agent])
            batch = run_agent_episodes(self.envs[: len(agent)], self.agent, params, seeds, [tasks[i] for i in agent])
            played = dict(zip(agent, batch, strict=True))
        return [played[i] if i in played else self._play_random(t) for i, t in enumerate(tasks)]

    def _play_random(self, task: EpisodeTask) -> Episode:
        seed = track_seed(self.cfg.seed, *task.track)
        rng = numpy_rng(self.cfg.seed, *task.noise)
        return run_episode(
            self.env, self.random_policy, seed, rng, task.max_steps, task.keep_frames, None, task.hopeless_steps
        )


_worker: dict[str, EpisodeWorker] = {}


def init_worker(cfg: WorldModelAgentConfig, fast_env: bool, models=None) -> None:
    """WorkerPool initializer: `models` is a picklable wm.agent.AgentModels, or None for the random policy."""
    _worker["w"] = EpisodeWorker(cfg, fast_env, models)


def play_task(task: EpisodeTask) -> Episode:
    return _worker["w"].play(task)


def play_tasks(tasks: list[EpisodeTask]) -> list[Episode]:
    return _worker["w"].play_many(tasks)


def group_size(tasks: int, workers: int, lockstep: int) -> int:
    """Episodes per work item: as even as `workers` allow in the fewest waves of at most `lockstep` per worker
    (32 tasks on 16 workers: 16 groups of 2; on 2 workers: 4 of 8; 24 on 2 workers: 4 of 6, not 8, 8, 8)."""
    waves = max(1, -(-tasks // (workers * lockstep)))
    return max(1, -(-tasks // (workers * waves)))


def play_episodes(
    pool: WorkerPool, tasks: list[EpisodeTask], desc: str, progress: bool = False, *, lockstep: int
) -> list[Episode]:
    """Play `tasks` on the pool's workers (results in task order), up to `lockstep` consecutive tasks at a time
    per worker (`group_size`), with a progress bar of episodes and real-game steps/s when `progress` (a CMA-ES
    generation, an evaluation, a round's collection). An episode does not depend on the episodes it is grouped
    with (`run_agent_episodes`) nor on the worker that plays it: the same episodes for any worker count and
    backend (tested)."""
    size = group_size(len(tasks), pool.workers, lockstep)
    groups = [tasks[i : i + size] for i in range(0, len(tasks), size)]
    episodes, steps, start = [], 0, time.perf_counter()
    with tqdm(total=len(tasks), unit="ep", desc=desc, disable=not progress, mininterval=1.0, leave=False) as bar:
        for group in pool.map(play_tasks, groups):
            episodes += group
            steps += sum(episode.steps for episode in group)
            bar.update(len(group))
            bar.set_postfix(steps_per_s=f"{steps / (time.perf_counter() - start):.0f}")
    return episodes
