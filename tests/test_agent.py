import numpy as np
import pytest
import torch

from wm.agent import Agent
from wm.config import parse_params
from wm.evaluate import evaluate_real, save_video
from wm.models.controller import make_controller_spec
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel
from wm.utils import WorkerPool

from .conftest import tiny_params


@pytest.fixture(scope="module")
def states():
    cfg = parse_params(tiny_params(ctrl={"use_hidden": True}))
    torch.manual_seed(0)
    return cfg, FSQVAE(cfg.fsq, cfg.vae).state_dict(), WorldModel(cfg.wm, cfg.fsq).state_dict()


def test_agent_plays_a_short_real_episode(states):
    cfg, vae_state, wm_state = states
    agent = Agent(cfg, vae_state, wm_state)
    theta = np.zeros(make_controller_spec(cfg.ctrl, cfg.fsq, cfg.wm).num_params, np.float32)
    ep = agent.play(theta, seed=5, max_steps=20, record=8)
    assert ep.steps == 20
    assert ep.frames.shape == (8, 64, 64, 3) and ep.frames.dtype == np.uint8
    assert ep.recons.shape == (8, 64, 64, 3) and ep.recons.dtype == np.uint8
    assert agent.play(theta, seed=5, max_steps=20).ret == ep.ret  # deterministic per track
    baseline = agent.play(None, seed=5, max_steps=20)
    assert baseline.steps == 20 and baseline.frames is None


def test_evaluate_real_and_video(states, tmp_path):
    cfg, vae_state, wm_state = states
    from wm.agent import init_worker

    theta = np.zeros(make_controller_spec(cfg.ctrl, cfg.fsq, cfg.wm).num_params, np.float32)
    with WorkerPool(1, init_worker, (cfg, vae_state, wm_state)) as pool:
        metrics, rows, ep = evaluate_real(pool, theta, cfg.seed, episodes=2, max_steps=15, record=6)
    assert {
        "eval/real/return_mean",
        "eval/real/return_std",
        "eval/real/return_min",
        "eval/real/return_max",
        "eval/random/return_mean",
    } <= set(metrics)
    assert [r["episode"] for r in rows] == [0, 1] and rows[0]["track_seed"] != rows[1]["track_seed"]
    assert metrics["eval/real/return_min"] <= metrics["eval/real/return_mean"] <= metrics["eval/real/return_max"]
    save_video(ep, tmp_path / "v.gif", every=1)
    import imageio.v3 as iio

    gif = iio.imread(tmp_path / "v.gif", index=None)
    assert gif.shape[0] == 6 and gif.shape[2] == 2 * gif.shape[1]  # real frame beside its reconstruction
