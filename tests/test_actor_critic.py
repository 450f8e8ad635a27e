"""The actor-critic in imagination (wm/models/actor_critic.py, wm/trainers/actor_critic.py): lambda-returns
against a hand computation, the policy's log-probabilities, solving a hand-built world model where one
action earns reward, exact resumption, and the controller trainer's use of it in iterative rounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wm.checkpoints import ResumeCache
from wm.config import ActorCriticConfig, parse_params
from wm.dream import ContextStarts, DreamEnv
from wm.errors import WmError
from wm.models.actor_critic import ActorCritic, Imagination, lambda_returns
from wm.models.controller import ControllerSpec, squash_actions
from wm.models.fsq import FSQ
from wm.trainers.actor_critic import ActorCriticTrainer, imagine

from .conftest import tiny_params
from .test_dream import FSQ_CFG, WM_CFG, D, H, action_rewarding_model, recorded, tiny_model
from .test_iterate import ROUNDS, data, replay, trainer  # noqa: F401 - `data` is a module fixture

AC = ActorCriticConfig(
    updates=150,
    batch=64,
    horizon=5,
    warmup=2,
    critic_hidden=32,
    actor_lr=0.01,
    critic_lr=0.01,
    eval_every=50,
    eval_dreams=16,
    entropy=1e-3,
)


def test_lambda_returns_by_hand():
    reward = torch.tensor([[1.0], [2.0], [3.0]])  # (T=3, B=1)
    value = torch.tensor([[10.0], [20.0], [30.0], [40.0]])  # (T+1, B)
    cont = torch.tensor([[1.0], [0.0], [1.0]])  # the episode ends at step 1
    g, lam = 0.9, 0.5
    r2 = 3 + g * 40  # bootstrapped with v(s_3)
    r1 = 2 + 0.0  # ended at step 1: no future
    r0 = 1 + g * ((1 - lam) * 20 + lam * r1)
    torch.testing.assert_close(lambda_returns(reward, value, cont, g, lam)[:, 0], torch.tensor([r0, r1, r2]))
    # lambda = 1 is the discounted Monte-Carlo return bootstrapped at T, lambda = 0 is TD(0)
    ones = torch.ones(3, 1)
    monte_carlo = torch.tensor(1 + g * 2 + g**2 * 3 + g**3 * 40)
    torch.testing.assert_close(lambda_returns(reward, value, ones, g, 1.0)[0, 0], monte_carlo)
    torch.testing.assert_close(lambda_returns(reward, value, ones, g, 0.0)[:, 0], reward[:, 0] + g * value[1:, 0])


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_raw_outputs_are_the_controllers_actions(kind):
    """The differentiable single-controller path is the controller CMA-ES evaluates (same layout)."""
    spec = ControllerSpec(kind, z_dim=D, h_dim=H, mlp_hidden=8)
    params = torch.randn(spec.num_params, generator=torch.Generator().manual_seed(0))
    obs = torch.randn(5, spec.obs_dim, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(squash_actions(spec.raw_outputs(params, obs)), spec.act(params.expand(5, -1), obs))
    start = spec.initial_params(torch.Generator().manual_seed(0))
    torch.testing.assert_close(spec.act(start[None], obs[:1]), torch.tensor([[0.0, 0.5, 0.0]]))  # the zero actions
    assert (kind == "mlp") == bool(start.any())  # the MLP's first layer is random, or no gradient reaches it


def test_log_prob_and_entropy_are_the_gaussians():
    spec = ControllerSpec("linear", z_dim=D)
    model = ActorCritic(spec, AC, D + H, torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.actor.normal_(generator=torch.Generator().manual_seed(1))
        model.log_std.copy_(torch.tensor([-1.0, 0.0, 0.5]))
    T, B = 2, 3
    g = torch.Generator().manual_seed(2)
    z, h = torch.randn(T + 1, B, D, generator=g), torch.randn(T + 1, B, H, generator=g)
    raw = torch.randn(T, B, 3, generator=g)
    normal = torch.distributions.Normal(model.policy_mean(z[:-1].reshape(T * B, D)).view(T, B, 3), model.log_std.exp())
    # with zero rewards and a zero critic every advantage is 0: the actor loss is the entropy bonus alone
    batch = Imagination(z, h, raw, torch.zeros(T, B), torch.ones(T, B), torch.ones(T, B, dtype=torch.bool))
    loss, metrics = model.compute_loss(batch)
    assert metrics["entropy"] == pytest.approx(float(normal.entropy().sum(-1)[0, 0].detach()), rel=1e-6)
    assert metrics["actor_loss"] == pytest.approx(-AC.entropy * metrics["entropy"], rel=1e-6)
    # the score-function gradient: one trajectory with advantage 1 pushes the mean towards its sampled action
    model.critic[-1].bias.data.fill_(-1.0)  # v = -1 everywhere; rewards 0 -> returns ~ -1 - ..., advantage > 0
    model.zero_grad()
    model.compute_loss(batch)[0].backward()
    assert model.actor.grad is not None and model.actor.grad.abs().sum() > 0


def steering_setup(tmp_path, kind: str = "linear", **ac):
    model = action_rewarding_model(0).eval()  # reward tanh(tanh(4 * steering)) / 0.1, never ends
    tokens = recorded(list(range(16)) * 2, [0, 15, 30])  # two episodes of 15 steps over every token
    dream = DreamEnv(model, FSQ(FSQ_CFG.levels), ContextStarts(tokens), 16, 1.0, 20, "cpu")
    spec = ControllerSpec(kind, z_dim=D, h_dim=H, mlp_hidden=8)
    cache = ResumeCache(tmp_path, "ctrl", {"test": kind, "ac": ac})
    return dream, tokens, spec, cache, AC.model_copy(update=ac)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_actor_critic_learns_the_rewarding_action(tmp_path, kind):
    dream, recorded_data, spec, cache, cfg = steering_setup(tmp_path, kind)
    t = ActorCriticTrainer(spec, cfg, D + H, seed=0, device=torch.device("cpu"), progress=False)
    before = t.measure(dream, 0)
    history = t.fit(dream, recorded_data, cache)
    assert abs(before) < 1e-3  # the starting controller steers straight
    best = 20 * math.tanh(math.tanh(4.0)) / WM_CFG.reward_scale  # 20 steps fully right
    assert history[-1]["ctrl/train/dream_return"] > 0.8 * best, history
    assert history[-1]["ctrl/train/value"] > history[0]["ctrl/train/value"]  # the critic learnt the future


def test_imagination_is_time_major_and_masks_ended_episodes():
    model = tiny_model(done_bias=None)
    with torch.no_grad():
        model.done_head.weight.zero_()
        model.done_head.bias.fill_(20.0)  # every episode ends on its first step
    dream = DreamEnv(model, FSQ(FSQ_CFG.levels), torch.arange(16), 4, 1.0, 3, "cpu")
    ac = ActorCritic(ControllerSpec("linear", z_dim=D), AC, D + H, torch.Generator().manual_seed(0))
    batch = imagine(dream, ac, 0, torch.Generator().manual_seed(0))
    assert batch.z.shape == (4, 4, D) and batch.h.shape == (4, 4, H) and batch.raw.shape == (3, 4, 3)
    assert batch.alive[0].all() and not batch.alive[1:].any()  # nothing happens after the end
    assert not batch.cont[0].any()  # the end is no bootstrap
    assert (batch.reward[1:] == 0).all()


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    dream, recorded_data, spec, cache, cfg = steering_setup(tmp_path / "whole", updates=20, eval_every=5)
    whole = ActorCriticTrainer(spec, cfg, D + H, seed=3, device=torch.device("cpu"), progress=False)
    whole_history = whole.fit(dream, recorded_data, cache)

    _, _, _, half_cache, _ = steering_setup(tmp_path / "halves", updates=20, eval_every=5)
    half = cfg.model_copy(update={"updates": 10})
    first = ActorCriticTrainer(spec, half, D + H, seed=3, device=torch.device("cpu"), progress=False)
    first.fit(dream, recorded_data, half_cache)  # the cache is keyed without `updates`: 20 continues these 10
    second = ActorCriticTrainer(spec, cfg, D + H, seed=3, device=torch.device("cpu"), progress=False)
    assert second.fit(dream, recorded_data, half_cache) == whole_history
    for a, b in zip(whole.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_actor_critic_needs_the_dream():
    with pytest.raises(WmError, match="ctrl: optimizer actor_critic trains in imagination: set train_in: dream"):
        parse_params(tiny_params(ctrl={"optimizer": "actor_critic", "train_in": "real"}))


AC_PARAMS = {"optimizer": "actor_critic", "kind": "mlp", "mlp_hidden": 4, "use_hidden": True}
AC_SMALL = {"updates": 4, "batch": 8, "horizon": 3, "warmup": 2, "eval_every": 2, "eval_dreams": 2}


def test_rounds_train_the_actor_critic_and_collect_with_its_controller(data):  # noqa: F811 - the fixture
    """Rounds with the actor-critic: round 1 collects with the round-0 actor (the published kind of controller),
    round 2 continues the same actor-critic (warm start), and the history has every round's measurements."""

    def config(**iterate):
        ctrl = {"generations": 2, "max_steps": 20, "ac": AC_SMALL} | AC_PARAMS
        return parse_params(tiny_params(iterate=ROUNDS | iterate, ctrl=ctrl))

    cfg = config()
    first = trainer(config(rounds=0), data)
    theta0 = first.fit(data[0]).params.numpy().copy()
    assert theta0.shape == (first.controller.spec.num_params,) and theta0.any()
    t = trainer(cfg, data)
    t.fit(data[0])
    round1 = t.round_data[0]
    a, b = round1.steps.step_offsets[:2]
    np.testing.assert_array_equal(round1.steps.actions[a:b], replay(cfg, t, theta0, 0, first.world_model))
    assert [row["round"] for row in t.history] == [0, 0, 1, 1, 2, 2]
    assert [row["update"] for row in t.history] == [2, 4] * 3
    assert t.rounds[-1]["dream_fitness"] == t.history[-1]["ctrl/train/dream_return"]


def test_round_1_plays_half_around_the_initial_actor(data):  # noqa: F811 - the fixture
    """iterate.first_centre: initial with the actor-critic: round 1's episodes not around the round-0 actor play
    around the actor round 0 began from (episode 2 of 4 unperturbed), rebuilt here from the seed alone."""
    ctrl = {"generations": 2, "max_steps": 20, "ac": AC_SMALL} | AC_PARAMS
    cfg = parse_params(tiny_params(iterate=ROUNDS | {"rounds": 1, "episodes": 4, "publish": "last"}, ctrl=ctrl))
    t = trainer(cfg, data)
    t.fit(data[0])
    spec, c = t.controller.spec, cfg.ctrl
    initial = ActorCriticTrainer(spec, c.ac, cfg.fsq.dim + cfg.wm.hidden, cfg.seed, "cpu", run=0).model.actor
    initial = initial.detach().numpy()
    assert not np.array_equal(initial, t.round_controllers[0][0])  # round 0 trained the actor away from it
    steps, world_model = t.round_data[0].steps, trainer(cfg, data).world_model  # the untrained round-0 model
    a, b = steps.step_offsets[2:4]
    np.testing.assert_array_equal(steps.actions[a:b], replay(cfg, t, initial, 2, world_model))


def test_the_linear_controller_on_z_alone_trains_and_publishes(data, tmp_path):  # noqa: F811 - the fixture
    """Every valid params value runs: the actor-critic with the default controller (linear on z, no h)."""
    ctrl = {"optimizer": "actor_critic", "max_steps": 20, "ac": AC_SMALL}
    cfg = parse_params(tiny_params(iterate={"rounds": 0}, ctrl=ctrl))
    t = trainer(cfg, data)
    controller = t.fit(data[0], metrics=tmp_path / "ctrl.json", plots=tmp_path / "plots")
    assert controller.spec.h_dim == 0 and controller.params.shape == (15,)
    torch.testing.assert_close(controller.params, t.actor_critic.model.actor.detach())
    t.publish(tmp_path / "agent")
    assert (tmp_path / "plots" / "history.csv").read_text().startswith("round,update,")
