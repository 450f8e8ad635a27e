"""Controllers for CMA-ES, the "C" model of World Models (Ha & Schmidhuber 2018, Sec. 2.3).

A controller is a tiny map from the observation [z, h] (the FSQ code, optionally with the world model's
LSTM hidden state) to the 3 CarRacing actions. Its parameters are one flat vector, which is what CMA-ES
searches over; ``ControllerSpec.act`` evaluates N different candidate vectors on N observations in one
batched einsum, so thousands of dream rollouts of a whole population advance together.

Flat parameter layout (row-major weights, then bias, layer by layer):
    linear: W (3, X), b (3)                        -> 3*X + 3 parameters
    mlp:    W1 (M, X), b1 (M), W2 (3, M), b2 (3)   -> M*X + M + 3*M + 3 parameters
with X = obs_dim, M = mlp_hidden, N = controllers evaluated together, P = num_params.
The all-zero vector is the natural CMA-ES start.

Action mapping from the raw outputs (a0, a1, a2), as in the World Models CarRacing controller
(hardmaru/WorldModelsExperiments, carracing/model.py):
    steering = tanh(a0)                in [-1, 1]   symmetric, 0 at a0 = 0: drive straight
    gas      = (tanh(a1) + 1) / 2      in [0, 1]    0.5 at a1 = 0: the car moves from the start
    brake    = clip(tanh(a2), 0, 1)    in [0, 1)    0 for every a2 <= 0
The brake is one-sided on purpose: a sigmoid brake would sit at sigmoid(0) = 0.5 for the zero vector
and for about half of any random population, so the car brakes constantly and CMA-ES first has to
learn not to. With the clip, braking is something a candidate has to opt into.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wm.checkpoints import PublishedModule
from wm.config import ControllerConfig

ACTION_DIM = 3  # CarRacing: steering, gas, brake


def squash_actions(raw: Tensor) -> Tensor:
    """(N, 3) raw outputs -> (N, 3) CarRacing actions (steering, gas, brake); see the module docstring."""
    t = torch.tanh(raw)
    return torch.stack([t[:, 0], (t[:, 1] + 1) / 2, t[:, 2].clamp(0.0, 1.0)], dim=-1)


@dataclass(frozen=True)
class ControllerSpec:
    """Shape of a controller family: knows the observation size and how to read a flat vector."""

    kind: Literal["linear", "mlp"]
    z_dim: int  # FSQ code dimension D
    h_dim: int = 0  # LSTM hidden size when the controller sees h, else 0
    mlp_hidden: int = 16  # M, used by kind == "mlp" only

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "mlp"):
            raise ValueError(f"unknown controller kind {self.kind!r}")

    @classmethod
    def from_config(cls, config: ControllerConfig) -> ControllerSpec:
        c = config.ctrl
        return cls(c.kind, config.fsq.dim, config.wm.hidden if c.use_hidden else 0, c.mlp_hidden)

    @property
    def obs_dim(self) -> int:
        return self.z_dim + self.h_dim

    @property
    def num_params(self) -> int:
        X, M, A = self.obs_dim, self.mlp_hidden, ACTION_DIM
        return A * X + A if self.kind == "linear" else M * X + M + A * M + A

    def observation(self, z: Tensor, h: Tensor | None = None) -> Tensor:
        """Controller input [z, h]: z (N, D) and, when h_dim > 0, h (N, H) -> (N, obs_dim)."""
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"z must be (N, {self.z_dim}), got {tuple(z.shape)}"
        if self.h_dim == 0:
            return z
        assert h is not None and h.shape == (z.shape[0], self.h_dim), f"h must be (N, {self.h_dim})"
        return torch.cat([z, h.to(z.dtype)], dim=-1)

    def raw_outputs(self, params: Tensor, obs: Tensor) -> Tensor:
        """One controller on N observations, differentiable in its flat vector (gradient training,
        wm/models/actor_critic.py): params (P,), obs (N, X) -> raw outputs (N, 3), before `squash_actions`."""
        X, A = self.obs_dim, ACTION_DIM
        assert params.shape == (self.num_params,) and obs.shape[1:] == (X,), "params (P,) and obs (N, X)"
        if self.kind == "linear":
            return F.linear(obs, params[: A * X].view(A, X), params[A * X :])  # W (3, X), b (3)
        M = self.mlp_hidden
        W1, b1 = params[: M * X].view(M, X), params[M * X : M * X + M]
        W2, b2 = params[M * X + M : M * X + M + A * M].view(A, M), params[M * X + M + A * M :]
        return F.linear(torch.tanh(F.linear(obs, W1, b1)), W2, b2)  # (N, X) -> (N, M) -> (N, 3)

    def initial_params(self, gen: torch.Generator) -> Tensor:
        """A starting vector for gradient training, (P,): the zero controller's actions (steer 0, gas 0.5, brake
        0) but, for the MLP, first-layer weights ~ N(0, 1/X), without which no gradient reaches the first layer
        (with W1 = 0 the hidden units are tanh(0) = 0 and W2 gets no gradient either)."""
        params = torch.zeros(self.num_params)
        if self.kind == "mlp":
            X, M = self.obs_dim, self.mlp_hidden
            params[: M * X] = torch.randn(M * X, generator=gen) / X**0.5
        return params

    def act(self, params: Tensor, obs: Tensor) -> Tensor:
        """N controllers at once: params (N, P), obs (N, X) -> actions (N, 3); row n uses params[n]."""
        N, X = obs.shape
        assert self.obs_dim == X, f"obs must be (N, {self.obs_dim}), got {tuple(obs.shape)}"
        assert params.shape == (N, self.num_params), f"params must be ({N}, {self.num_params})"
        params = params.to(obs.dtype)
        A = ACTION_DIM
        if self.kind == "linear":
            W = params[:, : A * X].view(N, A, X)  # (N, A*X) -> (N, A, X)
            b = params[:, A * X :]  # (N, A)
            return squash_actions(torch.einsum("nax,nx->na", W, obs) + b)
        M = self.mlp_hidden
        W1 = params[:, : M * X].view(N, M, X)  # (N, M*X) -> (N, M, X)
        b1 = params[:, M * X : M * X + M]  # (N, M)
        W2 = params[:, M * X + M : M * X + M + A * M].view(N, A, M)  # (N, A*M) -> (N, A, M)
        b2 = params[:, M * X + M + A * M :]  # (N, A)
        hidden = torch.tanh(torch.einsum("nmx,nx->nm", W1, obs) + b1)  # (N, M)
        return squash_actions(torch.einsum("nam,nm->na", W2, hidden) + b2)


class EvolutionaryController(PublishedModule, nn.Module):
    """One controller as a module: ``EvolutionaryController(cfg.controller)`` holds a flat parameter vector
    (all zeros unless given), the search space of CMA-ES; ``forward`` maps observations to actions."""

    kind = "controller"
    config_class = ControllerConfig

    def __init__(self, config: ControllerConfig, params: Tensor | np.ndarray | None = None) -> None:
        super().__init__()
        self.config = config
        self.spec = ControllerSpec.from_config(config)
        params = torch.zeros(self.spec.num_params) if params is None else torch.as_tensor(params)
        assert params.shape == (self.spec.num_params,), f"need {self.spec.num_params} params, got {tuple(params.shape)}"
        # A buffer, not a Parameter: CMA-ES sets it wholesale and never needs its gradient.
        self.register_buffer("params", params.detach().to(torch.float32).clone())

    def forward(self, obs: Tensor) -> Tensor:
        """obs (B, X) -> actions (B, 3), the same controller for every row."""
        return self.spec.act(self.params.expand(obs.shape[0], -1), obs)  # (P,) -> (B, P), a view
