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

Notation: B = envs, W = random streams (worlds), D = FSQ code dim, H = LSTM hidden, K = codebook size,
N = pool of start tokens, P = candidates, R = rollouts per candidate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from wm.datafiles import Tokens
from wm.models.controller import ACTION_DIM, ControllerSpec
from wm.models.fsq import FSQ
from wm.models.world_model import State, WorldModel

DoneMode = Literal["threshold", "sample"]
Policy = Callable[[Tensor], Tensor]  # obs (B, obs_dim) -> actions (B, 3)


def episode_start_tokens(tokens: Tokens) -> Tensor:
    """(E,) int64: the token of the first frame of every recorded episode, the pool dreams start from.

    Starting from real first frames keeps the dream on the data the model was trained on (World Models
    likewise starts its dreams from encoded initial frames)."""
    first_frames = tokens.steps.frame_offsets[:-1]  # (E,) frame index of each episode's first frame
    return torch.from_numpy(tokens.tokens[first_frames]).long()


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
        start_tokens: Tensor,
        num_envs: int,
        temperature: float,
        max_steps: int,
        device: torch.device | str,
        done_mode: DoneMode = "threshold",
        num_worlds: int | None = None,
    ) -> None:
        if fsq.codebook_size != model.codebook_size:
            raise ValueError(f"FSQ has {fsq.codebook_size} codes but the world model {model.codebook_size}")
        if start_tokens.ndim != 1 or len(start_tokens) == 0:
            raise ValueError(f"start_tokens must be a non-empty (N,) tensor, got shape {tuple(start_tokens.shape)}")
        if int(start_tokens.min()) < 0 or int(start_tokens.max()) >= model.codebook_size:
            raise ValueError(f"start_tokens must lie in [0, {model.codebook_size})")
        if temperature <= 0 or max_steps < 1 or num_envs < 1:
            raise ValueError(
                f"need temperature > 0, max_steps >= 1, num_envs >= 1; got {temperature}, {max_steps}, {num_envs}"
            )
        if done_mode not in ("threshold", "sample"):
            raise ValueError(f"done_mode must be 'threshold' or 'sample', got {done_mode!r}")
        num_worlds = num_envs if num_worlds is None else num_worlds
        if num_worlds < 1 or num_envs % num_worlds:
            raise ValueError(f"num_envs ({num_envs}) must be a multiple of num_worlds ({num_worlds})")
        self.model, self.fsq = model, fsq
        self.device = torch.device(device)
        self.start_tokens = start_tokens.to(self.device, torch.long)  # (N,)
        self.num_envs, self.num_worlds = num_envs, num_worlds
        self.temperature, self.max_steps, self.done_mode = temperature, max_steps, done_mode
        self.gen = torch.Generator(device=self.device)
        self.t = 0
        self.token = torch.zeros(num_envs, dtype=torch.long, device=self.device)  # (B,)
        self.state: State = model.initial_state(num_envs, self.device)
        self.terminated = torch.zeros(num_envs, dtype=torch.bool, device=self.device)  # (B,)
        self.truncated = torch.zeros_like(self.terminated)

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
        """Start every env from a start token drawn uniformly from the pool; zero LSTM state.

        obs is the FSQ code z (B, D); info["token"] (B,) and info["h"] (B, H), the LSTM output after the
        previous step (zeros here), which a controller using World Models' [z, h] reads."""
        self.gen.manual_seed(seed)
        pick = torch.randint(len(self.start_tokens), (self.num_worlds,), generator=self.gen, device=self.device)
        self.token = self.start_tokens[pick].repeat(self.num_envs // self.num_worlds)  # (W,) -> (B,)
        self.state = self.model.initial_state(self.num_envs, self.device)
        self.terminated.zero_()
        self.truncated.zero_()
        self.t = 0
        return self._obs_info()

    @torch.no_grad()
    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """actions (B, 3) -> obs (B, D), reward (B,), terminated (B,), truncated (B,), info.

        Envs that had already finished get reward 0 and keep their flags, observation and state."""
        assert actions.shape == (self.num_envs, ACTION_DIM), f"actions must be ({self.num_envs}, 3)"
        active = ~self.done  # (B,)
        logits, reward, done_logit, state = self.model.step(self.token, actions.to(self.device), self.state)
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
        self, spec: ControllerSpec, params: Tensor, rollouts_per_candidate: int, seed: int
    ) -> Tensor:
        """Mean dream return of each candidate, params (P, num_params) -> (P,).

        One dream of width P * R with this env's model and settings (its own num_envs is not used):
        env p * R + r runs candidate p in world r, so every candidate faces the same R dream episodes
        (common random numbers, see the module docstring)."""
        P, R = params.shape[0], rollouts_per_candidate
        if spec.h_dim not in (0, self.model.hidden):
            raise ValueError(f"controller h_dim {spec.h_dim} is neither 0 nor the LSTM hidden {self.model.hidden}")
        dream = DreamEnv(
            self.model,
            self.fsq,
            self.start_tokens,
            P * R,
            self.temperature,
            self.max_steps,
            self.device,
            done_mode=self.done_mode,
            num_worlds=R,
        )
        tiled = params.to(self.device).repeat_interleave(R, dim=0)  # (P, num_params) -> (P * R, num_params)
        returns = dream.rollout(lambda obs: spec.act(tiled, obs), seed, use_hidden=spec.h_dim > 0)
        return returns.view(P, R).mean(dim=1)  # (P * R,) -> (P, R) -> (P,)


def make_dream(world_model: WorldModel, tokens: Tokens, temperature: float, max_steps: int) -> DreamEnv:
    """The dream of a trained world model (on its device), started from real episode starts."""
    device = next(world_model.parameters()).device
    fsq = FSQ(world_model.config.fsq.levels).to(device)
    return DreamEnv(world_model.eval(), fsq, episode_start_tokens(tokens), 1, temperature, max_steps, device)
