"""wm: World Models (FSQ-VAE + token LSTM + CMA-ES controller) for Gymnasium CarRacing-v3.

from wm import WorldModelAgentConfig, FSQVAE, WorldModel, load_params
cfg = load_params("params.yaml")
vae = FSQVAE(cfg.fsq, cfg.vae)
world_model = WorldModel(cfg.wm, cfg.fsq)
"""

from wm.config import ConfigError, WorldModelAgentConfig, load_params, parse_params
from wm.dream import DreamEnv
from wm.envs import FastCarRacing, make_car_racing
from wm.models.controller import Controller, ControllerSpec, make_controller_spec
from wm.models.fsq import FSQ
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel

__all__ = [
    "FSQ",
    "FSQVAE",
    "ConfigError",
    "Controller",
    "ControllerSpec",
    "DreamEnv",
    "FastCarRacing",
    "WorldModel",
    "WorldModelAgentConfig",
    "load_params",
    "make_car_racing",
    "make_controller_spec",
    "parse_params",
]
