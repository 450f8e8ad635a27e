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
    def layer_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the weights and biases in the flat vector, in order (the module docstring's layout)."""
        X, M, A = self.obs_dim, self.mlp_hidden, ACTION_DIM
        return [(A, X), (A,)] if self.kind == "linear" else [(M, X), (M,), (A, M), (A,)]

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(shape)) for shape in self.layer_shapes)

    def layers(self, params: Tensor) -> list[Tensor]:
        """Flat vectors (..., P) cut into views of their layers (..., *shape), in `layer_shapes` order."""
        assert params.shape[-1] == self.num_params, f"params must be (..., {self.num_params})"
        lead, out, start = params.shape[:-1], [], 0
        for shape in self.layer_shapes:
            size = int(np.prod(shape))
            out.append(params[..., start : start + size].view(*lead, *shape))
            start += size
        return out

    def observation(self, z: Tensor, h: Tensor | None = None) -> Tensor:
        """Controller input [z, h]: z (..., D) and, when h_dim > 0, h (..., H) -> (..., obs_dim)."""
        assert z.shape[-1] == self.z_dim, f"z must be (..., {self.z_dim}), got {tuple(z.shape)}"
        if self.h_dim == 0:
            return z
        assert h is not None and h.shape == (*z.shape[:-1], self.h_dim), f"h must be (..., {self.h_dim})"
        return torch.cat([z, h.to(z.dtype)], dim=-1)

    def raw_outputs(self, params: Tensor, obs: Tensor) -> Tensor:
        """One controller on N observations, differentiable in its flat vector (gradient training,
        wm/models/actor_critic.py): params (P,), obs (N, X) -> raw outputs (N, 3), before `squash_actions`."""
        assert params.shape == (self.num_params,) and obs.shape[1:] == (self.obs_dim,), "params (P,) and obs (N, X)"
        if self.kind == "linear":
            W, b = self.layers(params)  # (3, X), (3,)
            return F.linear(obs, W, b)
        W1, b1, W2, b2 = self.layers(params)  # (M, X), (M,), (3, M), (3,)
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
        if self.kind == "linear":
            W, b = self.layers(params)  # (N, 3, X), (N, 3)
            return squash_actions(torch.einsum("nax,nx->na", W, obs) + b)
        W1, b1, W2, b2 = self.layers(params)  # (N, M, X), (N, M), (N, 3, M), (N, 3)
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
