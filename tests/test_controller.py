import numpy as np
import torch

from wm.config import CtrlConfig, FSQConfig, WMConfig
from wm.models.controller import Controller, ControllerSpec, make_controller_spec


def test_num_params():
    fsq, wm = FSQConfig(), WMConfig()
    assert make_controller_spec(CtrlConfig(kind="linear"), fsq, wm).num_params == 15
    linear_h = make_controller_spec(CtrlConfig(kind="linear", use_hidden=True), fsq, wm)
    assert linear_h.obs_dim == 4 + 256 and linear_h.num_params == 3 * 260 + 3
    mlp = make_controller_spec(CtrlConfig(kind="mlp", mlp_hidden=16), fsq, wm)
    assert mlp.num_params == 16 * 4 + 16 + 3 * 16 + 3 == 131


def test_batched_act_equals_loop_and_bounds():
    gen = torch.Generator().manual_seed(0)
    for spec in (ControllerSpec("linear", 4), ControllerSpec("mlp", 4, h_dim=6, mlp_hidden=5)):
        N = 32
        params = torch.randn(N, spec.num_params, generator=gen) * 3
        obs = torch.randn(N, spec.obs_dim, generator=gen) * 3
        batched = spec.act(params, obs)
        assert batched.shape == (N, 3)
        looped = torch.cat([Controller.from_flat(spec, params[n])(obs[n : n + 1]) for n in range(N)])
        torch.testing.assert_close(batched, looped)
        assert (batched[:, 0].abs() <= 1).all()
        assert ((batched[:, 1:] >= 0) & (batched[:, 1:] <= 1)).all()
        assert (batched[:, 2] == 0).any() and (batched[:, 2] > 0).any()


def test_zero_vector_drives_straight_without_braking():
    for spec in (ControllerSpec("linear", 4), ControllerSpec("mlp", 4, mlp_hidden=8)):
        actions = Controller(spec)(torch.randn(10, spec.obs_dim))
        torch.testing.assert_close(actions, torch.tensor([[0.0, 0.5, 0.0]]).expand(10, 3))


def test_observation_concat():
    spec = ControllerSpec("linear", 4, h_dim=3)
    z, h = torch.randn(2, 4), torch.randn(2, 3)
    assert torch.equal(spec.observation(z, h), torch.cat([z, h], -1))
    assert torch.equal(ControllerSpec("linear", 4).observation(z), z)


def test_state_dict_round_trip(tmp_path):
    spec = ControllerSpec("mlp", 4, h_dim=2, mlp_hidden=3)
    ctrl = Controller.from_flat(spec, np.arange(spec.num_params, dtype=np.float64) / 10)
    path = tmp_path / "ctrl.pt"
    torch.save(ctrl.state_dict(), path)
    rebuilt = Controller.from_state_dict(torch.load(path, weights_only=True))
    assert rebuilt.spec == spec and torch.equal(rebuilt.params, ctrl.params)
    obs = torch.randn(5, spec.obs_dim)
    torch.testing.assert_close(rebuilt(obs), ctrl(obs))
