"""wm: World Models (FSQ-VAE + token LSTM + CMA-ES controller) for Gymnasium CarRacing-v3.

    from wm import WorldModelAgentConfig, FSQVAE, WorldModel, EvolutionaryController
    config = WorldModelAgentConfig()               # or wm.load_params("params.yaml")
    vae = FSQVAE(config.fsq_vae)
    world_model = WorldModel(config.world_model)
    controller = EvolutionaryController(config.controller)
    agent = wm.load_agent("models")                # a trained agent from `dvc repro` or `dvc pull`

Names are imported on first use, so `import wm` (and every command's --help) does not load torch or gymnasium.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "ActorCritic": "wm.models.actor_critic",
    "ActorCriticTrainer": "wm.trainers.actor_critic",
    "Agent": "wm.agent",
    "AgentModels": "wm.agent",
    "ConfigError": "wm.errors",
    "ControllerConfig": "wm.config",
    "ControllerSpec": "wm.models.controller",
    "ControllerTrainer": "wm.trainers.controller",
    "DataCollector": "wm.collect",
    "DreamEnv": "wm.dream",
    "EvolutionaryController": "wm.models.controller",
    "FSQ": "wm.models.fsq",
    "FSQVAE": "wm.models.fsq_vae",
    "FSQVAEConfig": "wm.config",
    "FastCarRacing": "wm.envs",
    "RuntimeSettings": "wm.runtime",
    "VAETrainer": "wm.trainers.vae",
    "WmError": "wm.errors",
    "WorldModel": "wm.models.world_model",
    "WorldModelAgentConfig": "wm.config",
    "WorldModelConfig": "wm.config",
    "WorldModelTrainer": "wm.trainers.world_model",
    "load_agent": "wm.agent",
    "load_params": "wm.config",
    "make_car_racing": "wm.envs",
    "parse_params": "wm.config",
    "seed_everything": "wm.seeding",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'wm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from wm.agent import Agent as Agent
    from wm.agent import AgentModels as AgentModels
    from wm.agent import load_agent as load_agent
    from wm.collect import DataCollector as DataCollector
    from wm.config import (
        ControllerConfig as ControllerConfig,
    )
    from wm.config import (
        FSQVAEConfig as FSQVAEConfig,
    )
    from wm.config import (
        WorldModelAgentConfig as WorldModelAgentConfig,
    )
    from wm.config import (
        WorldModelConfig as WorldModelConfig,
    )
    from wm.config import (
        load_params as load_params,
    )
    from wm.config import (
        parse_params as parse_params,
    )
    from wm.dream import DreamEnv as DreamEnv
    from wm.envs import FastCarRacing as FastCarRacing
    from wm.envs import make_car_racing as make_car_racing
    from wm.errors import ConfigError as ConfigError
    from wm.errors import WmError as WmError
    from wm.models.actor_critic import ActorCritic as ActorCritic
    from wm.models.controller import ControllerSpec as ControllerSpec
    from wm.models.controller import EvolutionaryController as EvolutionaryController
    from wm.models.fsq import FSQ as FSQ
    from wm.models.fsq_vae import FSQVAE as FSQVAE
    from wm.models.world_model import WorldModel as WorldModel
    from wm.runtime import RuntimeSettings as RuntimeSettings
    from wm.seeding import seed_everything as seed_everything
    from wm.trainers.actor_critic import ActorCriticTrainer as ActorCriticTrainer
    from wm.trainers.controller import ControllerTrainer as ControllerTrainer
    from wm.trainers.vae import VAETrainer as VAETrainer
    from wm.trainers.world_model import WorldModelTrainer as WorldModelTrainer
