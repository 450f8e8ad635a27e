"""Actor-critic in imagination: the controller trained by gradients inside the world model.

Dreamer (Hafner et al. 2020, arXiv 1912.01603, Sec. 3) and DreamerV3 (Hafner et al. 2023, arXiv 2301.04104,
Sec. 2 "Actor critic learning") learn the policy from imagined trajectories of a short horizon that start
from encoded real states; a learned critic values what lies beyond the horizon. Short horizons keep the
policy close to states the world model was trained on, which is the dream-transfer problem of
iterative training attacked from the other side.

- Returns: lambda-returns (Dreamer Eq. 6, DreamerV3 Eq. 7), bootstrapped with the critic at the horizon,
  R_t = r_t + gamma * c_t * ((1 - lambda) * v(s_{t+1}) + lambda * R_{t+1}),   R_T = v(s_T),
  c_t = 0 where the dream ended the episode at step t (`lambda_returns`).
- Critic: a 2-layer MLP regressing R_t (stop-gradient). It reads [z, h] whatever the actor reads: the critic
  is only used in training, and the value of a state depends on the car's speed, which only h holds.
- Actor gradient: REINFORCE with the critic as baseline, as DreamerV3 does for discrete actions. The
  alternative, backpropagating the return through the world model, has to pass a sampled categorical
  next token over K = 1000 codes (straight-through: a biased gradient compounding over the horizon) and the
  reward head's gradient with respect to the action, i.e. exactly the direction in which a controller
  exploits the model's errors (the dream issue's failure). REINFORCE needs only the returns, like CMA-ES,
  the world model stays frozen under no_grad (cheap), and thousands of trajectories per update with a
  baseline keep its variance low.
- Return normalisation (DreamerV3 Eq. 9): advantages are divided by max(1, S), S an exponential moving
  average (decay 0.99) of the 5th-to-95th percentile range of the returns, so the entropy weight means the
  same whatever the reward scale, and small returns are not blown up.
- Policy: raw ~ Normal(mu(obs), sigma), actions = squash_actions(raw) (wm/models/controller.py); mu is the
  controller itself (a ControllerSpec flat vector, published like a CMA-ES controller and evaluated
  deterministically), sigma a learned state-independent std per action. Entropy bonus on the Gaussian.

Notation: T = horizon, B = imagined trajectories, X = actor input, D = code dim, H = LSTM hidden, A = 3.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from wm.config import ActorCriticConfig
from wm.models.controller import ACTION_DIM, ControllerSpec

RETURN_RANGE_DECAY = 0.99  # DreamerV3's EMA of the return percentile range
LOG_2PI_E = math.log(2 * math.pi * math.e)


class Imagination(NamedTuple):
    """A batch of imagined trajectories, time-major."""

    z: Tensor  # (T+1, B, D) codes s_0 .. s_T
    h: Tensor  # (T+1, B, H) LSTM outputs beside them
    raw: Tensor  # (T, B, A) sampled raw actions (before squash_actions)
    reward: Tensor  # (T, B) dream rewards, environment units
    cont: Tensor  # (T, B) 0 where the dream ended the episode at step t, else 1
    alive: Tensor  # (T, B) 1 where the episode had not ended before step t (step t happened)


def lambda_returns(reward: Tensor, value: Tensor, cont: Tensor, gamma: float, lam: float) -> Tensor:
    """reward (T, B), value (T+1, B), cont (T, B) -> lambda-returns (T, B) (Dreamer Eq. 6, bootstrapped at T)."""
    T = reward.shape[0]
    assert value.shape[0] == T + 1 and cont.shape == reward.shape, "value (T+1, B), reward and cont (T, B)"
    out = torch.empty_like(reward)
    ret = value[T]  # (B,)
    for t in reversed(range(T)):
        ret = reward[t] + gamma * cont[t] * ((1 - lam) * value[t + 1] + lam * ret)
        out[t] = ret
    return out


def _uniform_init(linear: nn.Linear, gen: torch.Generator, scale: float = 1.0) -> None:
    """torch's default Linear bound 1/sqrt(fan_in), drawn from `gen` instead of the global RNG."""
    bound = scale / linear.in_features**0.5
    with torch.no_grad():
        linear.weight.uniform_(-bound, bound, generator=gen)
        linear.bias.uniform_(-bound, bound, generator=gen)


class ActorCritic(nn.Module):
    """``ActorCritic(spec, cfg.ctrl.ac, z_dim + hidden, gen)``: the policy (the controller's flat vector `actor`
    and `log_std`) and the critic on [z, h]; `compute_loss(Imagination)` gives both losses."""

    def __init__(self, spec: ControllerSpec, config: ActorCriticConfig, critic_dim: int, gen: torch.Generator):
        super().__init__()
        self.spec, self.config = spec, config
        self.actor = nn.Parameter(spec.initial_params(gen))  # (P,), ControllerSpec's layout
        self.log_std = nn.Parameter(torch.full((ACTION_DIM,), math.log(config.init_std)))
        Hc = config.critic_hidden
        self.critic = nn.Sequential(nn.Linear(critic_dim, Hc), nn.ELU(), nn.Linear(Hc, Hc), nn.ELU(), nn.Linear(Hc, 1))
        for layer in self.critic:
            if isinstance(layer, nn.Linear):
                _uniform_init(layer, gen)
        with torch.no_grad():  # DreamerV3 zero-initialises the critic's output: no made-up values at the start
            self.critic[-1].weight.zero_()
            self.critic[-1].bias.zero_()
        self.register_buffer("return_range", torch.zeros(()))  # EMA of Per95(R) - Per5(R)

    def actor_parameters(self) -> list[nn.Parameter]:
        return [self.actor, self.log_std]

    def policy_mean(self, obs: Tensor) -> Tensor:
        """obs (N, X) -> mean raw actions (N, A)."""
        return self.spec.raw_outputs(self.actor, obs)

    def value(self, z: Tensor, h: Tensor) -> Tensor:
        """z (..., D), h (..., H) -> values (...)."""
        return self.critic(torch.cat([z, h], dim=-1)).squeeze(-1)

    @torch.no_grad()
    def sample(self, z: Tensor, h: Tensor, gen: torch.Generator) -> Tensor:
        """Raw actions (B, A) ~ Normal(mu([z, h]), sigma), the noise from `gen`."""
        mean = self.policy_mean(self.spec.observation(z, h))  # (B, A)
        noise = torch.randn(mean.shape, generator=gen, device=mean.device, dtype=mean.dtype)
        return mean + self.log_std.exp() * noise

    def compute_loss(self, batch: Imagination) -> tuple[Tensor, dict[str, float]]:
        """Actor loss (REINFORCE on normalised advantages, minus the entropy bonus) + critic loss (regression on
        the lambda-returns), each averaged over the steps that happened. Updates the return-range EMA."""
        cfg = self.config
        T, B = batch.reward.shape
        assert batch.z.shape[:2] == (T + 1, B) and batch.raw.shape == (T, B, ACTION_DIM), "time-major batch"
        alive = batch.alive.float()  # (T, B)
        steps = alive.sum().clamp(min=1.0)
        with torch.no_grad():
            values = self.value(batch.z, batch.h)  # (T+1, B)
            returns = lambda_returns(batch.reward, values, batch.cont.float(), cfg.gamma, cfg.td_lambda)  # (T, B)
            lo, hi = torch.quantile(returns[alive > 0], torch.tensor([0.05, 0.95], device=returns.device))
            if self.training:
                self.return_range.mul_(RETURN_RANGE_DECAY).add_((1 - RETURN_RANGE_DECAY) * (hi - lo))
            advantage = (returns - values[:-1]) / self.return_range.clamp(min=1.0)  # (T, B)

        value = self.value(batch.z[:-1], batch.h[:-1])  # (T, B), with gradient
        critic_loss = (alive * 0.5 * (value - returns) ** 2).sum() / steps

        obs = self.spec.observation(batch.z[:-1], batch.h[:-1])  # (T, B, X)
        mean = self.policy_mean(obs.reshape(T * B, -1)).view(T, B, ACTION_DIM)  # (T*B, X) -> (T, B, A)
        std = self.log_std.exp()  # (A,)
        log_prob = (-0.5 * ((batch.raw - mean) / std) ** 2 - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        entropy = (self.log_std + 0.5 * LOG_2PI_E).sum()  # of the Gaussian, state-independent
        actor_loss = -(alive * advantage * log_prob).sum() / steps - cfg.entropy * entropy
        loss = actor_loss + critic_loss
        metrics = {
            "actor_loss": float(actor_loss.detach()),
            "critic_loss": float(critic_loss.detach()),
            "entropy": float(entropy.detach()),
            "std": float(std.detach().mean()),
            "return": float((alive * returns).sum() / steps),
            "return_range": float(self.return_range),
            "value": float((alive * values[:-1]).sum() / steps),
            "reward": float((alive * batch.reward).sum() / steps),
        }
        return loss, metrics
