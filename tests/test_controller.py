"""wm/models/controller.py: the controller family (flat parameters for CMA-ES) and its published files."""

import numpy as np
import pytest
import torch

from wm.config import ControllerConfig, CtrlConfig, FSQConfig, WMConfig, ctrl_fingerprint, parse_params
from wm.errors import WmError
from wm.models.controller import ControllerSpec, EvolutionaryController, squash_actions
from wm.models.fsq_vae import FSQVAE

from .conftest import tiny_params


def config(kind: str = "linear", h_dim: int = 0, mlp_hidden: int = 16, levels=(8, 5, 5, 5)) -> ControllerConfig:
    """The ControllerConfig of ControllerSpec(kind, len(levels), h_dim, mlp_hidden)."""
    ctrl = CtrlConfig(kind=kind, use_hidden=h_dim > 0, mlp_hidden=mlp_hidden)
    return ControllerConfig(ctrl=ctrl, fsq=FSQConfig(levels=list(levels)), wm=WMConfig(hidden=max(h_dim, 1)))


def test_num_params():
    fsq, wm = FSQConfig(), WMConfig()

    def spec(**ctrl) -> ControllerSpec:
        return ControllerSpec.from_config(ControllerConfig(ctrl=CtrlConfig(**ctrl), fsq=fsq, wm=wm))

    assert spec(kind="linear").num_params == 15
    linear_h = spec(kind="linear", use_hidden=True)
    assert linear_h.obs_dim == 4 + 256 and linear_h.num_params == 3 * 260 + 3
    mlp = spec(kind="mlp", mlp_hidden=16)
    assert mlp.num_params == 16 * 4 + 16 + 3 * 16 + 3 == 131
    assert spec(kind="mlp", use_hidden=True, mlp_hidden=5) == ControllerSpec("mlp", 4, 256, 5)
    with pytest.raises(ValueError, match="unknown controller kind"):
        ControllerSpec("rnn", 4)


def test_batched_act_equals_loop_and_bounds():
    gen = torch.Generator().manual_seed(0)
    for cfg in (config("linear"), config("mlp", h_dim=6, mlp_hidden=5)):
        spec = ControllerSpec.from_config(cfg)
        assert spec.obs_dim == 4 + (6 if spec.kind == "mlp" else 0)
        N = 32
        params = torch.randn(N, spec.num_params, generator=gen) * 3
        obs = torch.randn(N, spec.obs_dim, generator=gen) * 3
        batched = spec.act(params, obs)
        assert batched.shape == (N, 3)
        looped = torch.cat([EvolutionaryController(cfg, params[n])(obs[n : n + 1]) for n in range(N)])
        torch.testing.assert_close(batched, looped)
        assert (batched[:, 0].abs() <= 1).all()
        assert ((batched[:, 1:] >= 0) & (batched[:, 1:] <= 1)).all()
        assert (batched[:, 2] == 0).any() and (batched[:, 2] > 0).any()


def test_linear_layout_and_action_mapping():
    """Flat layout W (3, X) row-major, then b (3); steering tanh, gas (tanh + 1) / 2, brake clip(tanh, 0, 1)."""
    spec = ControllerSpec("linear", 2)
    W = torch.tensor([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]])
    b = torch.tensor([0.1, -0.2, 0.3])
    params = torch.cat([W.flatten(), b])[None]
    obs = torch.tensor([[0.4, -0.7]])
    raw = obs @ W.T + b
    expected = torch.stack(
        [torch.tanh(raw[:, 0]), (torch.tanh(raw[:, 1]) + 1) / 2, torch.tanh(raw[:, 2]).clamp(0, 1)], -1
    )
    torch.testing.assert_close(spec.act(params, obs), expected)
    torch.testing.assert_close(squash_actions(raw), expected)
    torch.testing.assert_close(
        squash_actions(torch.tensor([[0.0, 0.0, -5.0], [-50.0, 50.0, 50.0]])),
        torch.tensor([[0.0, 0.5, 0.0], [-1.0, 1.0, 1.0]]),
    )


def test_zero_vector_drives_straight_without_braking():
    for cfg in (config("linear"), config("mlp", mlp_hidden=8)):
        ctrl = EvolutionaryController(cfg)
        assert torch.equal(ctrl.params, torch.zeros(ctrl.spec.num_params))
        actions = ctrl(torch.randn(10, ctrl.spec.obs_dim))
        torch.testing.assert_close(actions, torch.tensor([[0.0, 0.5, 0.0]]).expand(10, 3))


def test_observation_concat():
    spec = ControllerSpec("linear", 4, h_dim=3)
    z, h = torch.randn(2, 4), torch.randn(2, 3)
    assert torch.equal(spec.observation(z, h), torch.cat([z, h], -1))
    assert torch.equal(ControllerSpec("linear", 4).observation(z), z)
    z, h = torch.randn(5, 2, 4), torch.randn(5, 2, 3)  # (T, B, .): imagined trajectories
    assert torch.equal(spec.observation(z, h), torch.cat([z, h], -1))


def test_layers_follow_the_documented_flat_layout():
    """linear: W (3, X) row-major then b (3); mlp: W1 (M, X), b1 (M), W2 (3, M), b2 (3); any leading dims."""
    X, M = 5, 2
    linear, mlp = ControllerSpec("linear", 4, h_dim=1), ControllerSpec("mlp", 4, h_dim=1, mlp_hidden=M)
    flat = torch.arange(linear.num_params, dtype=torch.float32)
    W, b = linear.layers(flat)
    assert W[1, 2] == 1 * X + 2 and b.tolist() == [15, 16, 17]
    flat = torch.arange(mlp.num_params, dtype=torch.float32).expand(3, -1)  # (N, P)
    W1, b1, W2, b2 = mlp.layers(flat)
    assert W1.shape == (3, M, X) and W1[2, 1, 0] == X
    assert b1[0].tolist() == [10, 11] and W2[0, 2, 1] == 12 + 2 * M + 1 and b2[0].tolist() == [18, 19, 20]


def test_params_are_a_float32_copy():
    cfg = config("mlp", h_dim=2, mlp_hidden=3)
    source = np.arange(ControllerSpec.from_config(cfg).num_params, dtype=np.float64) / 10
    ctrl = EvolutionaryController(cfg, source)
    assert ctrl.params.dtype == torch.float32 and not ctrl.params.requires_grad
    source[0] = 99.0
    assert ctrl.params[0] == 0.0  # not a view of the caller's array
    assert "params" in ctrl.state_dict() and not list(ctrl.parameters())  # a buffer: CMA-ES sets it wholesale
    with pytest.raises(AssertionError, match="need"):
        EvolutionaryController(cfg, np.zeros(3))


def test_published_file_round_trip(tmp_path):
    cfg = config("mlp", h_dim=2, mlp_hidden=3)
    spec = ControllerSpec.from_config(cfg)
    ctrl = EvolutionaryController(cfg, np.arange(spec.num_params, dtype=np.float64) / 10)
    path = tmp_path / "ctrl.pt"
    ctrl.publish(path, {"seed": 0}, {"best_fitness": 1.5})
    rebuilt = EvolutionaryController.from_file(path)
    assert rebuilt.spec == spec and rebuilt.config == cfg and torch.equal(rebuilt.params, ctrl.params)
    assert not rebuilt.training
    obs = torch.randn(5, spec.obs_dim)
    torch.testing.assert_close(rebuilt(obs), ctrl(obs))
    # weights only: it loads without unpickling objects
    assert torch.load(path, weights_only=True)["kind"] == "controller"
    # the bytes depend only on the values
    again = tmp_path / "again.pt"
    EvolutionaryController(cfg, ctrl.params.clone()).publish(again, {"seed": 0}, {"best_fitness": 1.5})
    assert again.read_bytes() == path.read_bytes()


def test_published_file_of_other_params_or_kind_is_refused(tmp_path):
    cfg = parse_params(tiny_params())
    path = tmp_path / "controller.pt"
    EvolutionaryController(cfg.controller).publish(path, ctrl_fingerprint(cfg), {})
    EvolutionaryController.from_file(path, ctrl_fingerprint(cfg))
    other = parse_params(tiny_params(ctrl={"popsize": 8}))
    with pytest.raises(WmError, match=r"trained under other params \(ctrl\.popsize\); run `dvc repro train_ctrl`"):
        EvolutionaryController.from_file(path, ctrl_fingerprint(other))
    FSQVAE(cfg.fsq_vae).publish(tmp_path / "vae.pt", {}, {})
    with pytest.raises(WmError, match="holds a vae model, expected controller"):
        EvolutionaryController.from_file(tmp_path / "vae.pt")
    with pytest.raises(WmError, match=r"missing input \(run `dvc repro train_ctrl` first\)"):
        EvolutionaryController.from_file(tmp_path / "nope.pt")
