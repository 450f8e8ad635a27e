"""The trained agent (World Models' V, M and C) acting on CarRacing observations, and loading it from the
weights-only model files the pipeline publishes (wm/checkpoints.py).

    agent = wm.load_agent("models/agent")    # vae.pt, wm.pt, controller.pt of `dvc repro`
    env = wm.make_car_racing()
    obs, _ = env.reset(seed=7)
    agent.reset()
    action = agent.act(obs)                  # raw (96, 96, 3) observation -> (steer, gas, brake)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wm.checkpoints import Published, fingerprint_changes, read_published
from wm.config import ControllerConfig, FSQVAEConfig, WorldModelConfig
from wm.errors import WmError
from wm.frames import preprocess
from wm.models.controller import EvolutionaryController
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel


@torch.no_grad()
def encode_fixed_width(vae: FSQVAE, frames: np.ndarray, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames (K, 64, 64, 3) uint8 -> tokens (K,) int64 and FSQ codes (K, D), in VAE batches of exactly
    `width` rows (`ctrl.lockstep`), the last one padded with blank frames.

    A conv layer's last float bits depend on the batch size, so a frame encoded in a batch of 3 and in one
    of 8 can get different codes where a latent lies that close to an FSQ rounding boundary; they do not
    depend on the batch's other rows or on the thread count (measured on 4,000 recorded frames: 0 bits
    differ; tested). One fixed width makes an episode's tokens independent of which episodes share its
    batch, so episodes can be grouped to fit any number of workers, an agent playing alone acts as it did in
    the pipeline's evaluation, and the fidelity panel's dreams start from the tokens its agents saw."""
    x = torch.from_numpy(frames)  # (K, H, W, 3)
    K, pad = len(x), -len(x) % width
    if pad:
        x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])  # (K + pad, H, W, 3)
    tokens, codes = zip(*(vae.encode(batch) for batch in x.split(width)), strict=True)
    return torch.cat(tokens)[:K], torch.cat(codes)[:K]


class Agent:
    """V (FSQ-VAE encoder) -> z, M (world model) -> h when the controller reads it, C (controller) -> action.

    A policy for wm/episodes.py: `reset()` at the start of an episode, then one call per 64x64 frame;
    `act` takes the raw (96, 96, 3) CarRacing observation instead."""

    needs_frames = True

    def __init__(self, vae: FSQVAE, controller: EvolutionaryController, world_model: WorldModel | None = None):
        if controller.spec.h_dim and world_model is None:
            raise ValueError("this controller reads the world model's hidden state h: pass the world model")
        if controller.spec.z_dim != vae.fsq.dim:
            raise ValueError(f"controller reads {controller.spec.z_dim}-d codes, the VAE makes {vae.fsq.dim}-d")
        self.vae, self.controller = vae.eval(), controller.eval()
        self.world_model = world_model.eval() if controller.spec.h_dim else None
        self.width = controller.config.ctrl.lockstep  # rows of every VAE batch (`encode`)
        self.state = None

    def set_params(self, params: np.ndarray | torch.Tensor) -> None:
        """Load a flat controller parameter vector (a CMA-ES candidate)."""
        self.controller.params.copy_(torch.as_tensor(params, dtype=torch.float32))

    def reset(self, rng: np.random.Generator | None = None) -> None:
        self.state = self.initial_state(1)

    @torch.no_grad()
    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """(64, 64, 3) uint8 frame -> action (3,) float32."""
        actions, self.state = self.step_many(frame[None], self.controller.params[None], self.state)
        return actions[0]

    @torch.no_grad()
    def step_many(self, frames: np.ndarray, params: torch.Tensor, state) -> tuple[np.ndarray, object]:
        """K episodes in lockstep, one controller each: frames (K, 64, 64, 3) uint8, params (K, P), the world
        model's state of K rows (None without h) -> actions (K, 3) float32 and the next state."""
        return self.act_many(*self.encode(frames), params, state)

    def encode(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (K, 64, 64, 3) uint8 -> tokens (K,) int64 and FSQ codes (K, D), in VAE batches of this
        agent's fixed width (`encode_fixed_width`)."""
        return encode_fixed_width(self.vae, frames, self.width)

    @torch.no_grad()
    def act_many(self, tokens: torch.Tensor, z: torch.Tensor, params: torch.Tensor, state) -> tuple[np.ndarray, object]:
        """`step_many` after the encoder: tokens (K,), codes (K, D) -> actions (K, 3) and the next state.

        The world model and the controllers run row by row: their batched products differ in the last bits
        from one row at a time, and with h those bits feed back into every later step."""
        rows = []
        for k in range(len(tokens)):
            row_state = None if state is None else tuple(x[:, k : k + 1] for x in state)  # (1, 1, H) each
            h = None if row_state is None else WorldModel.hidden_of(row_state)  # (1, H)
            action = self.controller.spec.act(params[k : k + 1], self.controller.spec.observation(z[k : k + 1], h))
            if self.world_model is not None:
                _, _, _, row_state = self.world_model.step(tokens[k : k + 1], action, row_state)
            rows.append((action, row_state))
        actions = torch.cat([a for a, _ in rows])  # (K, 3)
        if state is not None:
            state = tuple(torch.cat([s[i] for _, s in rows], dim=1) for i in range(len(state)))  # (1, K, H) each
        return actions.numpy(), state

    def initial_state(self, episodes: int):
        """The world model's state for `episodes` new episodes (None when the controller does not read h)."""
        return None if self.world_model is None else self.world_model.initial_state(episodes)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Raw CarRacing observation (96, 96, 3) uint8 -> action (3,) float32 (steer, gas, brake)."""
        return self(preprocess(obs))


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class AgentModels:
    """What a worker process needs to build an Agent (picklable): the VAE, the world model when the
    controller reads h, and the controller's config (its parameters come with each episode)."""

    vae: tuple[FSQVAEConfig, dict]
    controller: ControllerConfig
    world_model: tuple[WorldModelConfig, dict] | None = None

    @classmethod
    def of(cls, vae: FSQVAE, controller: ControllerConfig, world_model: WorldModel | None = None) -> AgentModels:
        wm = (world_model.config, _cpu_state(world_model)) if controller.ctrl.use_hidden else None
        return cls((vae.config, _cpu_state(vae)), controller, wm)

    def build(self) -> Agent:
        def rebuild(module_cls: type[nn.Module], pair: tuple) -> nn.Module:
            module = module_cls(pair[0])
            module.load_state_dict(pair[1])
            return module

        wm = None if self.world_model is None else rebuild(WorldModel, self.world_model)
        return Agent(rebuild(FSQVAE, self.vae), EvolutionaryController(self.controller), wm)


def _check_belongs(upstream: Published, downstream: Published, names: tuple[Path, Path]) -> None:
    """A downstream model's fingerprint contains its upstream's: refuse files from different runs."""
    changed = fingerprint_changes(
        upstream.fingerprint, {k: downstream.fingerprint.get(k) for k in upstream.fingerprint}
    )
    if changed:
        raise WmError(f"{names[0]} and {names[1]} come from different runs (they differ in {', '.join(changed)})")


def load_agent(models: str | Path = "models/agent") -> Agent:
    """The trained agent from a folder of published model files (what `dvc repro` or `dvc pull` leaves in
    models/agent): vae.pt, controller.pt and, when the controller reads h, wm.pt."""
    paths = {
        kind: Path(models) / name
        for kind, name in (("vae", "vae.pt"), ("wm", "wm.pt"), ("controller", "controller.pt"))
    }
    vae = read_published(paths["vae"], "vae")
    ctrl = read_published(paths["controller"], "controller")
    _check_belongs(vae, ctrl, (paths["vae"], paths["controller"]))
    world_model = None
    if ControllerConfig.model_validate(ctrl.config).ctrl.use_hidden:
        found = read_published(paths["wm"], "wm")
        _check_belongs(found, ctrl, (paths["wm"], paths["controller"]))
        world_model = WorldModel.from_published(found)
    return Agent(FSQVAE.from_published(vae), EvolutionaryController.from_published(ctrl), world_model)
