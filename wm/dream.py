"""The dream: B CarRacing episodes played entirely inside the token world model, batched.

World Models (Ha & Schmidhuber 2018, arXiv 1803.10122, Sec. 4.4-4.5) trains the controller "inside
its own hallucinated dream": the M model replaces the game, sampling the next latent, the reward and
the end of the episode. :class:`DreamEnv` does this for B environments at once with a
gymnasium-vector-like API (``reset`` / ``step`` / ``rollout``), so a whole CMA-ES population is scored
in one wide batch (:meth:`DreamEnv.evaluate_candidates`) rather than one game per worker process.

Temperature. Next tokens are drawn from softmax(logits / temperature). The paper (Sec. 4.5, Table 2)
shows why this knob matters: at temperature 0.1 the Doom agent scored 2086 in the dream but only 193 in
the real game, because a near-deterministic dream has exploitable glitches the controller learns to
abuse; around 1.15 the dream is noisy enough that only robust policies score, and those transferred
best (1092 in reality). Sampling at temperature > 1 makes the dream harder than the model believes it is.

Randomness and common random numbers. Every random number comes from one ``torch.Generator`` seeded in
``reset``, on the model's device, so a rollout is a pure function of (seed, actions) on a given device
(CPU and CUDA generators differ). Tokens are sampled by inverse CDF: one uniform u per env and step,
token = first k with cdf_k > u * cdf_K. That needs a single random number per env instead of K for
Gumbel-max, and, unlike ``torch.multinomial``, what an env draws does not depend on how many other envs
share the batch. The B envs are grouped into ``num_worlds`` (W) random streams: env b uses stream
b % W for its start token, token uniforms and done uniforms. With W = B (the default) every env is
independent; ``evaluate_candidates`` sets W = R (rollouts per candidate) so rollout r of every candidate
plays the same dream world (same start, same uniforms): CMA-ES only ranks candidates, and common random
numbers make the ranking reflect the parameters rather than which candidate got the easier draw, and
two candidates with equal parameters get exactly equal fitness.

Starts. A dream starts from real data (`DreamStarts`): a token drawn from a pool (`TokenStarts`, e.g. the
first frames of recorded episodes), given tokens per world (`FixedStarts`: the first frames of given real
tracks, for comparing dream and game on the same tracks, wm/fidelity.py), or a real episode prefix
(`ContextStarts`): the LSTM reads `warmup` real steps (tokens and actions) teacher-forced before the dream
takes over, from the start of an episode or anywhere in it, as discrete-latent world models start their
imagination from encoded real states (IRIS, Dreamer): the dream then begins where the data is, in states
a policy really visits, with an LSTM state that carries the speed.

Levers against exploitation (each measured, README "Dreams that transfer"): `hopeless_steps` ends an
episode after that many consecutive steps without reward (no new tile), as AttentionAgent ended its
CarRacing training episodes, so a controller gains nothing from states the model never saw a car recover
from; `dropout_masks` draws one dropout mask of the world model per world and keeps it for the episode
(Dropout's Dream Land: an implicit ensemble, so a controller must do well in many slightly different
dreams rather than exploit one).

Notation: B = envs, W = random streams (worlds), D = FSQ code dim, H = LSTM hidden, K = codebook size,
N = pool of start tokens, P = candidates, R = rollouts per candidate, L = warm-up steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from wm.config import CtrlConfig
from wm.datafiles import Tokens
from wm.errors import WmError
from wm.models.controller import ACTION_DIM, ControllerSpec
from wm.models.fsq import FSQ
from wm.models.world_model import State, WorldModel

DoneMode = Literal["threshold", "sample"]
Policy = Callable[[Tensor], Tensor]  # obs (B, obs_dim) -> actions (B, 3)


class DreamStarts(Protocol):
    def sample(self, model: WorldModel, num_worlds: int, gen: torch.Generator) -> tuple[Tensor, State]:
        """Start token (W,) and LSTM state ((1, W, H), (1, W, H)) of each world, on the generator's device."""


@dataclass(frozen=True)
class TokenStarts:
    """Each world starts from a token drawn uniformly from a pool (N,), with a zero LSTM state."""

    pool: Tensor

    def sample(self, model: WorldModel, num_worlds: int, gen: torch.Generator) -> tuple[Tensor, State]:
        pool = self.pool.to(gen.device, torch.long)
        pick = torch.randint(len(pool), (num_worlds,), generator=gen, device=gen.device)
        return pool[pick], model.initial_state(num_worlds, gen.device)


@dataclass(frozen=True)
class FixedStarts:
    """World w starts from tokens[w] (W,), with a zero LSTM state: e.g. the encoded first frames of W real
    tracks, so that a controller meets the same starts in the dream as in the game."""

    tokens: Tensor

    def sample(self, model: WorldModel, num_worlds: int, gen: torch.Generator) -> tuple[Tensor, State]:
        if num_worlds % len(self.tokens):
            raise ValueError(f"{num_worlds} worlds cannot share {len(self.tokens)} fixed starts evenly")
        tokens = self.tokens.to(gen.device, torch.long).repeat(num_worlds // len(self.tokens))
        return tokens, model.initial_state(num_worlds, gen.device)


@dataclass(frozen=True)
class ContextStarts:
    """Each world starts inside a real episode: `warmup` real steps (L) are read teacher-forced, then the dream
    continues from the following frame. `anywhere` picks the position uniformly in the episode, else its start."""

    data: Tokens
    warmup: int = 0
    anywhere: bool = False

    def __post_init__(self) -> None:
        if not (self.data.steps.lengths > self.warmup).any():
            raise WmError(
                f"no recorded episode is longer than the {self.warmup} warm-up steps of a dream start; lower "
                "ctrl.dream_warmup (CMA-ES) or ctrl.ac.warmup (actor-critic), or collect longer episodes"
            )

    @torch.no_grad()
    def sample(self, model: WorldModel, num_worlds: int, gen: torch.Generator) -> tuple[Tensor, State]:
        steps, L, device = self.data.steps, self.warmup, gen.device
        usable = np.flatnonzero(steps.lengths > L)  # episodes with a frame after the warm-up
        pick = torch.randint(len(usable), (num_worlds,), generator=gen, device=device).cpu().numpy()
        episodes = usable[pick]  # (W,)
        room = steps.lengths[episodes] - L  # (W,) start positions 0 .. room - 1 keep L steps and a next frame
        u = torch.rand(num_worlds, generator=gen, device=device).cpu().numpy()
        start = (u * room).astype(np.int64) if self.anywhere else np.zeros(num_worlds, np.int64)
        frames = steps.frame_offsets[episodes] + start  # (W,) frame index of each world's first frame
        f_idx = frames[:, None] + np.arange(L + 1)  # (W, L+1)
        tokens = torch.from_numpy(self.data.tokens[f_idx]).to(device)  # (W, L+1)
        state = model.initial_state(num_worlds, device)
        if L:
            s_idx = steps.step_offsets[episodes][:, None] + start[:, None] + np.arange(L)  # (W, L)
            actions = torch.from_numpy(steps.actions[s_idx]).to(device)  # (W, L, 3)
            state = model(tokens[:, :-1], actions, state).state
        return tokens[:, -1], state

    @classmethod
    def of_controller(cls, data: Tokens, ctrl: CtrlConfig) -> ContextStarts:
        """The starts of a controller's training dreams: `ctrl.dream_warmup` real steps into the recorded episodes,
        from their first frames or (`ctrl.dream_start: anywhere`) from anywhere in them."""
        return cls(data, ctrl.dream_warmup, ctrl.dream_start == "anywhere")


class DreamEnv:
    """B dream episodes in lockstep. No autoreset: a finished env stays finished, its observation and
    LSTM state frozen and its reward 0, so summing rewards over time gives each env's episode return.

    done_mode "threshold" (default) ends an episode when sigmoid(done_logit) > 0.5: deterministic, and a
    model that puts, say, 2% on "done" at every step cannot kill a good driver by chance every ~50 steps.
    "sample" draws done ~ Bernoulli(sigmoid(done_logit)) as World Models' Doom dream did (Sec. 4.4);
    it is the faithful reading of the model's uncertainty but adds deaths the real game would not have.
    """

    def __init__(
        self,
        model: WorldModel,
        fsq: FSQ,
        starts: DreamStarts | Tensor,
        num_envs: int,
        temperature: float,
        max_steps: int,
        device: torch.device | str,
        done_mode: DoneMode = "threshold",
        num_worlds: int | None = None,
        hopeless_steps: int = 0,
        dropout_masks: bool = False,
    ) -> None:
        """`starts`: where dreams begin (a tensor is a pool of start tokens, `TokenStarts`); `hopeless_steps`:
        end an episode after that many consecutive steps with negative reward (0: never); `dropout_masks`:
        one dropout mask of the world model per world, kept for the whole episode."""
        if fsq.codebook_size != model.codebook_size:
            raise ValueError(f"FSQ has {fsq.codebook_size} codes but the world model {model.codebook_size}")
        if isinstance(starts, Tensor):
            if starts.ndim != 1 or len(starts) == 0:
                raise ValueError(f"start tokens must be a non-empty (N,) tensor, got shape {tuple(starts.shape)}")
            if int(starts.min()) < 0 or int(starts.max()) >= model.codebook_size:
                raise ValueError(f"start tokens must lie in [0, {model.codebook_size})")
            starts = TokenStarts(starts)
        if temperature <= 0 or max_steps < 1 or num_envs < 1 or hopeless_steps < 0:
            raise ValueError(
                f"need temperature > 0, max_steps >= 1, num_envs >= 1, hopeless_steps >= 0; got {temperature}, "
                f"{max_steps}, {num_envs}, {hopeless_steps}"
            )
        if done_mode not in ("threshold", "sample"):
            raise ValueError(f"done_mode must be 'threshold' or 'sample', got {done_mode!r}")
        if dropout_masks and model.dropout.p == 0:
            raise ValueError("dropout masks need a world model trained with dropout (wm.dropout > 0)")
        num_worlds = num_envs if num_worlds is None else num_worlds
        if num_worlds < 1 or num_envs % num_worlds:
            raise ValueError(f"num_envs ({num_envs}) must be a multiple of num_worlds ({num_worlds})")
        self.model, self.fsq, self.starts = model, fsq, starts
        self.device = torch.device(device)
        self.num_envs, self.num_worlds = num_envs, num_worlds
        self.temperature, self.max_steps, self.done_mode = temperature, max_steps, done_mode
        self.hopeless_steps, self.dropout_masks = hopeless_steps, dropout_masks
        self.gen = torch.Generator(device=self.device)
        self.t = 0
        self.token = torch.zeros(num_envs, dtype=torch.long, device=self.device)  # (B,)
        self.state: State = model.initial_state(num_envs, self.device)
        self.mask: Tensor | None = None  # (B, H) dropout mask, scaled by 1 / (1 - p)
        self.terminated = torch.zeros(num_envs, dtype=torch.bool, device=self.device)  # (B,)
        self.truncated = torch.zeros_like(self.terminated)
        self.no_reward = torch.zeros(num_envs, dtype=torch.long, device=self.device)  # (B,) consecutive steps

    def settings(self) -> dict:
        """The keyword arguments that make another dream like this one (of another width)."""
        return {
            "temperature": self.temperature,
            "max_steps": self.max_steps,
            "device": self.device,
            "done_mode": self.done_mode,
            "hopeless_steps": self.hopeless_steps,
            "dropout_masks": self.dropout_masks,
        }

    @property
    def done(self) -> Tensor:
        """(B,) bool: the env's episode has ended (terminated or truncated)."""
        return self.terminated | self.truncated

    def _uniform(self) -> Tensor:
        """(B,) uniforms in [0, 1), one per world, tiled so env b reads world b % W."""
        return torch.rand(self.num_worlds, generator=self.gen, device=self.device).repeat(
            self.num_envs // self.num_worlds
        )

    def _obs_info(self) -> tuple[Tensor, dict[str, Tensor]]:
        z = self.fsq.indices_to_codes(self.token)  # (B,) -> (B, D)
        return z, {"token": self.token, "h": WorldModel.hidden_of(self.state)}

    @torch.no_grad()
    def reset(self, seed: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Start every env from its world's start (`starts`): a start token and LSTM state per world.

        obs is the FSQ code z (B, D); info["token"] (B,) and info["h"] (B, H), the LSTM output after the
        previous step (zeros at a cold start), which a controller using World Models' [z, h] reads."""
        self.gen.manual_seed(seed)
        copies = self.num_envs // self.num_worlds
        token, (h, c) = self.starts.sample(self.model, self.num_worlds, self.gen)  # (W,), (1, W, H) x 2
        self.token = token.to(self.device).repeat(copies)  # (W,) -> (B,): env b is in world b % W
        self.state = (h.repeat(1, copies, 1), c.repeat(1, copies, 1))  # (1, W, H) -> (1, B, H)
        if self.dropout_masks:
            p, H = self.model.dropout.p, self.model.hidden
            keep = torch.rand(self.num_worlds, H, generator=self.gen, device=self.device) >= p  # (W, H)
            self.mask = (keep.float() / (1 - p)).repeat(copies, 1)  # (W, H) -> (B, H)
        self.terminated.zero_()
        self.truncated.zero_()
        self.no_reward.zero_()
        self.t = 0
        return self._obs_info()

    @torch.no_grad()
    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """actions (B, 3) -> obs (B, D), reward (B,), terminated (B,), truncated (B,), info.

        Envs that had already finished get reward 0 and keep their flags, observation and state."""
        assert actions.shape == (self.num_envs, ACTION_DIM), f"actions must be ({self.num_envs}, 3)"
        active = ~self.done  # (B,)
        logits, reward, done_logit, state = self.model.step(self.token, actions.to(self.device), self.state, self.mask)
        # Inverse-CDF sampling from softmax(logits / T). softmax subtracts the row max, so it stays finite
        # as T -> 0, where all mass lands on the argmax token. u is scaled by the total mass because the
        # float32 cumsum need not end at exactly 1.
        cdf = torch.softmax(logits / self.temperature, dim=-1).cumsum_(dim=-1)  # (B, K)
        u = self._uniform()[:, None] * cdf[:, -1:]  # (B, 1)
        # right=True: token k owns [cdf_{k-1}, cdf_k), so zero-probability tokens are never drawn; the
        # clamp only guards u * total rounding up to total.
        token = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=self.model.codebook_size - 1)
        p_done = torch.sigmoid(done_logit)  # (B,)
        ends = p_done > 0.5 if self.done_mode == "threshold" else self._uniform() < p_done
        if self.hopeless_steps:
            self.no_reward = torch.where(reward < 0, self.no_reward + 1, torch.zeros_like(self.no_reward))
            ends = ends | (self.no_reward >= self.hopeless_steps)

        self.token = torch.where(active, token, self.token)
        keep = active[None, :, None]  # (B,) -> (1, B, 1), broadcast over the LSTM state (1, B, H)
        self.state = (torch.where(keep, state[0], self.state[0]), torch.where(keep, state[1], self.state[1]))
        self.t += 1
        self.terminated |= active & ends
        self.truncated |= active & ~ends & (self.t >= self.max_steps)
        reward = torch.where(active, reward, torch.zeros_like(reward))
        obs, info = self._obs_info()
        return obs, reward, self.terminated.clone(), self.truncated.clone(), info

    @torch.no_grad()
    def rollout(self, policy: Policy, seed: int, use_hidden: bool) -> Tensor:
        """Play every env to its end (at most max_steps) from reset(seed); returns (B,) episode returns.

        The policy sees [z, h] (B, D + H) when use_hidden, else z (B, D): the same layout as
        ``ControllerSpec.observation``."""
        z, info = self.reset(seed)
        returns = torch.zeros(self.num_envs, device=self.device)  # (B,)
        for _ in range(self.max_steps):
            obs = torch.cat([z, info["h"]], dim=-1) if use_hidden else z  # (B, D + H) or (B, D)
            z, reward, _, _, info = self.step(policy(obs))
            returns += reward
            if bool(self.done.all()):
                break
        return returns

    def evaluate_candidates(
        self, spec: ControllerSpec, params: Tensor, rollouts_per_candidate: int, seed: int, pessimism: float = 0.0
    ) -> Tensor:
        """Mean dream return of each candidate, params (P, num_params) -> (P,), minus `pessimism` times the
        standard deviation over its rollouts: a controller whose return depends on which dream it meets (which
        dropout mask, which sampled tokens) is where the model is unsure, and CMA-ES learns to avoid it.

        One dream of width P * R with this env's model and settings (its own num_envs is not used):
        env p * R + r runs candidate p in world r, so every candidate faces the same R dream episodes
        (common random numbers, see the module docstring)."""
        P, R = params.shape[0], rollouts_per_candidate
        if spec.h_dim not in (0, self.model.hidden):
            raise ValueError(f"controller h_dim {spec.h_dim} is neither 0 nor the LSTM hidden {self.model.hidden}")
        dream = DreamEnv(self.model, self.fsq, self.starts, P * R, num_worlds=R, **self.settings())
        tiled = params.to(self.device).repeat_interleave(R, dim=0)  # (P, num_params) -> (P * R, num_params)
        returns = dream.rollout(lambda obs: spec.act(tiled, obs), seed, use_hidden=spec.h_dim > 0)
        returns = returns.view(P, R)  # (P * R,) -> (P, R)
        mean = returns.mean(dim=1)  # (P,)
        return mean - pessimism * returns.std(dim=1, correction=0) if pessimism else mean


def make_dream(world_model: WorldModel, starts: DreamStarts, temperature: float, max_steps: int, **levers) -> DreamEnv:
    """The dream of a trained world model (on its device); `levers`: hopeless_steps, dropout_masks."""
    device = next(world_model.parameters()).device
    fsq = FSQ(world_model.config.fsq.levels).to(device)
    return DreamEnv(world_model.eval(), fsq, starts, 1, temperature, max_steps, device, **levers)


def controller_dream(world_model: WorldModel, starts: DreamStarts, ctrl: CtrlConfig, max_steps: int) -> DreamEnv:
    """The dream a controller of `ctrl` is trained in (its temperature and levers), `max_steps` long: training, the
    rounds' predictions of the collected returns, and evaluation's dream return and fidelity panel."""
    levers = {"hopeless_steps": ctrl.hopeless_steps, "dropout_masks": ctrl.dream_dropout}
    return make_dream(world_model, starts, ctrl.temperature, max_steps, **levers)
