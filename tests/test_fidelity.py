"""The dream-fidelity metric (wm/fidelity.py, wm/evaluate.py): rank correlation of dream and real returns
over a panel of controllers, checked on hand-built world models that rank like the game (+1) and backwards
(-1), and the dream-vs-real video."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wm.agent import AgentModels
from wm.config import parse_params
from wm.dream import FixedStarts, make_dream
from wm.episodes import init_worker
from wm.evaluate import beside_reconstructions, dream_replay, fidelity
from wm.fidelity import Panel, controller_panel, fidelity_metrics, rank, spearman
from wm.models.controller import ControllerSpec
from wm.models.fsq_vae import FSQVAE
from wm.parallel import WorkerPool

from .conftest import tiny_params
from .test_dream import FSQ_CFG, WM_CFG, gas_rewarding_model


def test_spearman_is_pearson_on_ranks():
    x = np.array([3.0, 1.0, 2.0, 5.0])
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert rank(np.array([2.0, 1.0, 2.0, 0.0])).tolist() == [2.5, 1.0, 2.5, 0.0]  # ties share their mean rank
    assert spearman(x, np.ones(4)) == 0.0  # a constant side carries no ranking
    y = np.array([1.0, 3.0, 2.0, 4.0])
    ranks_x, ranks_y = rank(x) - 1.5, rank(y) - 1.5
    assert spearman(x, y) == pytest.approx((ranks_x * ranks_y).sum() / np.sqrt((ranks_x**2).sum() * (ranks_y**2).sum()))


def test_panel_holds_trained_zero_perturbations_and_random():
    trained = np.arange(15, dtype=np.float32)
    panel = controller_panel(trained, 12, seed=0)
    assert panel.params.shape == (12, 15) and panel.params.dtype == np.float32
    np.testing.assert_array_equal(panel.params[0], trained)
    assert not panel.params[1].any() and panel.names[:2] == ["trained", "zero"]
    assert (
        sum(n.startswith("random") for n in panel.names) == 2
        and sum(n.startswith("perturbed") for n in panel.names) == 8
    )
    small = panel.params[panel.names.index("perturbed@0.1#0")] - trained
    large = panel.params[panel.names.index("perturbed@1.0#2")] - trained
    assert 0 < np.abs(small).mean() < np.abs(large).mean()
    np.testing.assert_array_equal(controller_panel(trained, 12, seed=0).params, panel.params)  # reproducible
    with pytest.raises(ValueError, match="at least 3"):
        controller_panel(trained, 2, seed=0)


def test_metrics_name_the_trained_controllers_gap():
    m = fidelity_metrics(np.array([50.0, 0.0, 10.0]), np.array([300.0, -20.0, 40.0]))
    assert m["rank_corr"] == pytest.approx(1.0) and m["gap_trained"] == -250.0 and m["real_spread"] == 320.0


@pytest.fixture(scope="module")
def agent_parts():
    cfg = parse_params(tiny_params(fsq={"levels": FSQ_CFG.levels}, wm=WM_CFG.model_dump()))
    torch.manual_seed(0)
    return cfg, FSQVAE(cfg.fsq_vae).eval()


def gas_panel(spec: ControllerSpec) -> Panel:
    """Bias-only controllers that drive straight at gas 0, 0.1 and 0.2 (gas = (tanh(b) + 1) / 2; the linear
    layout is W (3, X), b (3)). Measured on the first evaluation tracks, 120 steps: -5, ~41 and ~58 (any gas
    from 0.2 up reaches the same tiles in 120 steps, so higher gas would tie)."""
    params = np.zeros((3, spec.num_params), np.float32)
    params[:, 3 * spec.obs_dim + 1] = np.arctanh([-0.999999, -0.8, -0.6])
    return Panel(["no gas", "gas 0.1", "gas 0.2"], params)


@pytest.mark.parametrize(("sign", "expected"), [(1.0, 1.0), (-1.0, -1.0)])
def test_fidelity_of_dreams_that_rank_like_the_game_and_backwards(agent_parts, sign, expected):
    """In the real game more gas drives further along the first straight, so more tiles; a dream whose
    reward rises with gas ranks the panel like the game (+1), one whose reward falls with gas backwards (-1).
    The dreams start from the tracks' first frames encoded as the agents encoded them: in VAE batches of the
    agent's fixed width, whatever the number of tracks (a frame's code can depend on the batch size)."""
    cfg, vae = agent_parts
    sizes = []

    class SpyVAE:
        @staticmethod
        def encode(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            sizes.append(len(frames))
            return vae.encode(frames)

    model = gas_rewarding_model()
    with torch.no_grad():
        model.reward_head.weight.mul_(sign)
    spec = ControllerSpec.from_config(cfg.controller)
    panel = gas_panel(spec)
    dream = make_dream(model, FixedStarts(torch.zeros(1, dtype=torch.long)), 1.0, 120)
    with WorkerPool(1, init_worker, (cfg, True, AgentModels.of(vae, cfg.controller, model))) as pool:
        metrics, rows = fidelity(pool, SpyVAE, dream, spec, panel, tracks=2, seed=0, lockstep=cfg.ctrl.lockstep)
    assert cfg.ctrl.lockstep != 2 and sizes == [cfg.ctrl.lockstep]
    real = [r["real"] for r in rows]
    assert real[0] < real[1] < real[2], real  # the game's own ranking of the panel
    assert metrics["rank_corr"] == pytest.approx(expected)
    assert [r["controller"] for r in rows] == panel.names
    assert metrics["gap_trained"] == pytest.approx(rows[0]["dream"] - rows[0]["real"])


def test_dream_replay_and_the_three_panel_video(agent_parts):
    cfg, vae = agent_parts
    frames = np.random.default_rng(0).integers(0, 256, (7, 64, 64, 3), dtype=np.uint8)
    actions = np.zeros((6, 3), np.float32)
    with torch.no_grad():
        tokens, codes = (x.numpy() for x in vae.encode(torch.from_numpy(frames)))  # (7,), (7, D)
    tokens[0] = (tokens[0] + 1) % vae.codebook_size  # not frame 0's own token: the dream starts at the given one
    dreamt = dream_replay(gas_rewarding_model(), vae, tokens, actions, temperature=1.0, seed=0)
    assert dreamt.shape == (7, 64, 64, 3) and dreamt.dtype == np.uint8
    with torch.no_grad():
        first = vae.decode_indices(torch.from_numpy(tokens[:1]))
    np.testing.assert_array_equal(dreamt[0], first[0].permute(1, 2, 0).mul(255).round().clamp(0, 255).byte().numpy())
    video = beside_reconstructions(vae, frames, codes, dreamt)
    assert video.shape == (7, 64, 192, 3)  # real | reconstruction | dream
    np.testing.assert_array_equal(video[:, :, :64], frames)
    np.testing.assert_array_equal(video[:, :, 128:], dreamt)
    assert beside_reconstructions(vae, frames, codes).shape == (7, 64, 128, 3)
