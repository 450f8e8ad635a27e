"""`ActorCriticTrainer`: updates of the actor-critic (wm/models/actor_critic.py) on batches imagined by the
world model, resumable, with the actor's dream return measured every `ctrl.ac.eval_every` updates.

Each update imagines `ac.batch` trajectories of `ac.horizon` steps with the current policy, from real
encoded states anywhere in the recorded episodes after `ac.warmup` real steps through the LSTM
(ContextStarts), then takes one Adam step on each of actor and critic. The world model is frozen.

Every random number has its own stream (IMAGINE, run, part, update): initialisation, each update's dream
worlds and policy noise, and the fixed dreams that measure the actor, so a resumed run (weights,
optimizers and the return-range EMA from the checkpoint) replays exactly the updates an uninterrupted run
would have made.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

import torch
from tqdm import tqdm

from wm.checkpoints import ResumeCache
from wm.config import ActorCriticConfig
from wm.datafiles import Tokens
from wm.dream import ContextStarts, DreamEnv
from wm.interrupt import raise_if_interrupted
from wm.metrics import MetricMeans
from wm.models.actor_critic import ActorCritic, Imagination
from wm.models.controller import ControllerSpec, squash_actions
from wm.seeding import Stream, int_seed, torch_generator


class Part(IntEnum):
    """The random streams of one actor-critic run: keys (run, part, update)."""

    INIT = 0
    WORLDS = 1  # the imagined batch's starts, sampled tokens and dones
    NOISE = 2  # the policy's Gaussian noise
    MEASURE = 3  # the dreams that measure the actor (the same at every measurement)


@torch.no_grad()
def imagine(dream: DreamEnv, model: ActorCritic, seed: int, noise: torch.Generator) -> Imagination:
    """Play the dream's envs for its max_steps (the horizon T) with actions sampled from the policy."""
    z, info = dream.reset(seed)  # (B, D), h (B, H)
    zs, hs, raws, rewards, conts, alives = [z], [info["h"]], [], [], [], []
    for _ in range(dream.max_steps):
        alives.append(~dream.done)
        raw = model.sample(z, info["h"], noise)  # (B, A)
        z, reward, terminated, _, info = dream.step(squash_actions(raw))
        zs.append(z)
        hs.append(info["h"])
        raws.append(raw)
        rewards.append(reward)
        conts.append(~terminated)  # truncation at the horizon is not an end: the critic bootstraps it
    stack = torch.stack
    return Imagination(stack(zs), stack(hs), stack(raws), stack(rewards), stack(conts), stack(alives))


class ActorCriticTrainer:
    """The actor-critic of one controller spec. `fit` runs `ac.updates` updates in a dream (resuming from a cache);
    calling it again (the next round of iterative training) continues from the current weights."""

    def __init__(
        self,
        spec: ControllerSpec,
        config: ActorCriticConfig,
        critic_dim: int,
        seed: int,
        device: torch.device,
        run: int = 0,
        progress: bool = True,
    ):
        """`critic_dim`: the size of [z, h]; `run` names the initialisation's random stream."""
        self.config, self.seed, self.device, self.progress = config, seed, device, progress
        init = torch_generator(seed, Stream.IMAGINE, run, Part.INIT)
        self.model = ActorCritic(spec, config, critic_dim, init)
        self.model.to(device)
        self.actor_opt = torch.optim.Adam(self.model.actor_parameters(), lr=config.actor_lr)
        self.critic_opt = torch.optim.Adam(self.model.critic.parameters(), lr=config.critic_lr)

    def _state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
        }

    def _load(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])

    def imagination(self, dream: DreamEnv, data: Tokens) -> DreamEnv:
        """The dream of the updates: `dream`'s model and levers, ac.batch envs of ac.horizon steps from real states
        anywhere in `data` after ac.warmup real steps."""
        c = self.config
        settings = dream.settings() | {"max_steps": c.horizon}
        return DreamEnv(dream.model, dream.fsq, ContextStarts(data, c.warmup, anywhere=True), c.batch, **settings)

    def measure(self, dream: DreamEnv, run: int) -> float:
        """Mean return of the deterministic actor (the controller it publishes) in `ac.eval_dreams` episodes of
        `dream` (the same dreams at every measurement of a run)."""
        params = self.model.actor.detach()[None]  # (1, P)
        seed = int_seed(self.seed, Stream.IMAGINE, run, Part.MEASURE)
        return float(dream.evaluate_candidates(self.model.spec, params, self.config.eval_dreams, seed)[0])

    def fit(
        self,
        dream: DreamEnv,
        data: Tokens,
        cache: ResumeCache,
        run: int = 0,
        on_measure: Callable[[list[dict]], None] | None = None,
    ) -> list[dict]:
        """`ac.updates` updates imagined in `dream`'s world model from the states of `data`; `dream` itself (its
        starts, ctrl.max_steps) measures the actor. Returns the history: one row per measurement."""
        c = self.config
        ckpt = cache.load("update", c.updates, self.device)
        update, history = 0, []
        if ckpt is not None:
            self._load(ckpt["state"])
            update, history = int(ckpt["update"]), ckpt["history"]
        imagination = self.imagination(dream, data)
        means = MetricMeans()
        bar = tqdm(
            total=c.updates, initial=update, desc=f"actor-critic {run}", unit="update", disable=not self.progress
        )
        t0, first = time.perf_counter(), update
        self.model.train()
        while update < c.updates:
            raise_if_interrupted()
            world_seed = int_seed(self.seed, Stream.IMAGINE, run, Part.WORLDS, update)
            noise = torch_generator(self.seed, Stream.IMAGINE, run, Part.NOISE, update, device=self.device.type)
            batch = imagine(imagination, self.model, world_seed, noise)
            loss, metrics = self.model.compute_loss(batch)
            self.actor_opt.zero_grad(set_to_none=True)
            self.critic_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.actor_parameters(), c.grad_clip)
            torch.nn.utils.clip_grad_norm_(self.model.critic.parameters(), c.grad_clip)
            self.actor_opt.step()
            self.critic_opt.step()
            means.add(metrics, 1)
            update += 1
            bar.update()
            if update % c.eval_every == 0 or update == c.updates:
                row = {"update": update} | {f"ctrl/train/{k}": v for k, v in means.result().items()}
                row["ctrl/train/dream_return"] = self.measure(dream, run)
                history.append(row)
                means = MetricMeans()
                cache.save(state=self._state(), update=update, history=history)
                if on_measure is not None:
                    on_measure(history)
                steps = (update - first) * c.batch * c.horizon
                bar.write(
                    f"ctrl update {update}/{c.updates}  dream return {row['ctrl/train/dream_return']:.1f}  "
                    f"imagined return {row['ctrl/train/return']:.1f}  value {row['ctrl/train/value']:.1f}  "
                    f"std {row['ctrl/train/std']:.3f}  ({steps / (time.perf_counter() - t0):.0f} imagined steps/s)"
                )
        bar.close()
        if ckpt is not None and int(ckpt["update"]) == c.updates and on_measure is not None:
            on_measure(history)  # a finished checkpoint: rewrite the artefacts from its history
        return history
