import numpy as np
import pytest
import torch

from wm.config import FSQConfig, WMConfig, WorldModelConfig
from wm.datafiles import StepData, Tokens
from wm.dream import DreamEnv, episode_start_tokens, make_dream
from wm.models.controller import ControllerSpec
from wm.models.fsq import FSQ
from wm.models.world_model import WorldModel

FSQ_CFG = FSQConfig(levels=[4, 4])  # K = 16, D = 2
WM_CFG = WMConfig(hidden=32, embed_dim=8)
K, D, H = 16, 2, 32


def tiny_model(seed: int = 0, done_bias: float | None = -20.0) -> WorldModel:
    """A random tiny world model; done_bias (when not None) pins sigmoid(done_logit) near 0 or 1."""
    torch.manual_seed(seed)
    model = WorldModel(WorldModelConfig(wm=WM_CFG, fsq=FSQ_CFG))
    if done_bias is not None:
        with torch.no_grad():
            model.done_head.weight.zero_()
            model.done_head.bias.fill_(done_bias)
    return model


def make_env(model: WorldModel, num_envs: int = 8, **kwargs) -> DreamEnv:
    settings = {"start_tokens": torch.arange(K), "temperature": 1.0, "max_steps": 50, "device": "cpu"} | kwargs
    return DreamEnv(model, FSQ(FSQ_CFG.levels), num_envs=num_envs, **settings)


def random_actions(T: int, B: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, 3, generator=g) * torch.tensor([2.0, 1.0, 1.0]) - torch.tensor([1.0, 0.0, 0.0])


def play(env: DreamEnv, seed: int, actions: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    obs, info = env.reset(seed)
    out = [(obs, info["token"], info["h"])]
    for a in actions:
        obs, reward, term, trunc, info = env.step(a)
        out.append((obs, reward, term, trunc, info["token"], info["h"]))
    return out


def test_shapes():
    B = 5
    env = make_env(tiny_model(), num_envs=B)
    obs, info = env.reset(0)
    assert obs.shape == (B, D) and info["token"].shape == (B,) and info["h"].shape == (B, H)
    assert torch.equal(info["h"], torch.zeros(B, H))  # h before any step
    assert torch.equal(obs, env.fsq.indices_to_codes(info["token"]))
    obs, reward, term, trunc, info = env.step(torch.zeros(B, 3))
    assert obs.shape == (B, D) and reward.shape == (B,) and info["h"].shape == (B, H)
    assert term.shape == trunc.shape == (B,) and term.dtype == trunc.dtype == torch.bool
    assert info["token"].dtype == torch.long and bool((info["token"] >= 0).all() & (info["token"] < K).all())
    assert not torch.equal(info["h"], torch.zeros(B, H))


def test_deterministic_under_seed():
    model, B, T = tiny_model(), 16, 6
    actions = random_actions(T, B)
    a, b = play(make_env(model, B), 3, actions), play(make_env(model, B), 3, actions)
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            assert torch.equal(u, v)
    c = play(make_env(model, B), 4, actions)
    assert not all(torch.equal(x[-2], y[-2]) for x, y in zip(a[1:], c[1:], strict=True))  # tokens differ


def test_low_temperature_samples_argmax():
    model, B = tiny_model(), 8
    env = make_env(model, B, temperature=1e-6)
    _, info = env.reset(0)
    token, state = info["token"], model.initial_state(B)
    for a in random_actions(5, B):
        logits, _, _, state = model.step(token, a, state)
        _, _, _, _, info = env.step(a)
        token = logits.argmax(dim=-1)
        assert torch.equal(info["token"], token)


def test_start_tokens_from_pool():
    pool = torch.tensor([3, 7])
    env = make_env(tiny_model(), 64, start_tokens=pool)
    _, info = env.reset(0)
    assert set(info["token"].tolist()) == {3, 7}
    with pytest.raises(ValueError):
        make_env(tiny_model(), 4, start_tokens=torch.tensor([K]))


def test_episode_start_tokens():
    step_offsets = np.array([0, 3, 5])  # episodes of 3 and 2 steps: frames [0, 4) and [4, 7)
    steps = StepData(
        actions=np.zeros((5, 3), np.float32),
        rewards=np.zeros(5, np.float32),
        terminated=np.zeros(5, bool),
        truncated=np.zeros(5, bool),
        step_offsets=step_offsets,
        track_seeds=np.zeros(2, np.uint64),
    )
    tokens = Tokens(tokens=np.arange(10, 17), codes=np.zeros((7, D), np.float32), steps=steps, levels=[4, 4])
    assert episode_start_tokens(tokens).tolist() == [10, 14]


@pytest.mark.parametrize("done_mode", ["threshold", "sample"])
def test_done_is_masked(done_mode):
    B = 4
    env = make_env(tiny_model(done_bias=20.0), B, done_mode=done_mode)
    env.reset(0)
    _, r1, term, trunc, info = env.step(torch.zeros(B, 3))
    assert bool(term.all()) and not bool(trunc.any()) and bool((r1 != 0).all())
    token, h = info["token"], info["h"]
    for _ in range(3):
        obs, reward, term, trunc, info = env.step(torch.ones(B, 3))
        assert torch.equal(reward, torch.zeros(B)) and bool(term.all()) and not bool(trunc.any())
        assert torch.equal(info["token"], token) and torch.equal(info["h"], h)  # frozen at the end


def test_truncation_at_max_steps():
    B, T = 4, 5
    env = make_env(tiny_model(done_bias=-20.0), B, max_steps=T)
    steps = play(env, 0, torch.zeros(T + 2, B, 3))
    for t, (_, reward, term, trunc, _, _) in enumerate(steps[1:], start=1):
        assert not bool(term.any())
        assert bool(trunc.all()) == (t >= T) and bool(trunc.any()) == (t >= T)
        if t > T:
            assert torch.equal(reward, torch.zeros(B))


def test_rollout_feeds_z_and_h():
    B, T = 6, 7
    env = make_env(tiny_model(), B, max_steps=T)
    seen: list[int] = []

    def policy(obs: torch.Tensor) -> torch.Tensor:
        seen.append(obs.shape[1])
        return torch.zeros(obs.shape[0], 3)

    returns = env.rollout(policy, seed=0, use_hidden=True)
    assert returns.shape == (B,) and seen == [D + H] * T
    # The return is the sum of step rewards under the same seed and actions.
    total = sum(s[1] for s in play(make_env(tiny_model(), B, max_steps=T), 0, torch.zeros(T, B, 3))[1:])
    torch.testing.assert_close(returns, total)
    seen.clear()
    env.rollout(policy, seed=0, use_hidden=False)
    assert seen == [D] * T


def test_rollout_stops_when_all_done():
    calls = 0

    def policy(obs: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return torch.zeros(obs.shape[0], 3)

    make_env(tiny_model(done_bias=20.0), 3, max_steps=100).rollout(policy, seed=0, use_hidden=False)
    assert calls == 1  # every env terminated on the first step


def test_evaluate_candidates_matches_per_candidate_rollouts():
    model, P, R = tiny_model(), 5, 3
    spec = ControllerSpec("linear", z_dim=D, h_dim=H)
    params = torch.randn(P, spec.num_params, generator=torch.Generator().manual_seed(0))
    params[3] = params[1]  # identical candidates face identical dreams: identical fitness
    env = make_env(model, num_envs=1, max_steps=20)
    fitness = env.evaluate_candidates(spec, params, rollouts_per_candidate=R, seed=7)
    assert fitness.shape == (P,)
    assert fitness[3] == fitness[1]
    for p in range(P):
        single = make_env(model, num_envs=R, max_steps=20)
        returns = single.rollout(lambda obs, p=p: spec.act(params[p].expand(R, -1), obs), seed=7, use_hidden=True)
        torch.testing.assert_close(fitness[p], returns.mean(), atol=1e-4, rtol=1e-4)


def gas_rewarding_model() -> WorldModel:
    """A hand-set world model whose reward rises with gas and whose episodes never terminate.

    LSTM gate order is (input, forget, cell, output): open input and output gates, closed forget gate,
    cell input tanh(4 * gas) on unit 0, so h_0 = tanh(tanh(4 * gas)); the reward head reads h_0."""
    model = tiny_model(done_bias=-20.0)
    E = WM_CFG.embed_dim
    with torch.no_grad():
        lstm = model.lstm
        for p in (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0):
            p.zero_()
        lstm.bias_ih_l0[:H] = 10.0  # input gate open
        lstm.bias_ih_l0[H : 2 * H] = -10.0  # forget gate closed: h depends on this step's input only
        lstm.weight_ih_l0[2 * H, E + 1] = 4.0  # cell input of unit 0 <- gas (action index 1)
        lstm.bias_ih_l0[3 * H :] = 10.0  # output gate open
        model.reward_head.weight.zero_()
        model.reward_head.weight[0, 0] = 1.0
        model.reward_head.bias.zero_()
    return model


def test_more_gas_means_higher_fitness_in_handcrafted_dream():
    spec = ControllerSpec("linear", z_dim=D)
    gas_bias = 3 * spec.obs_dim + 1  # the linear layout is W (3, X) then b (3); b[1] drives the gas
    params = torch.zeros(3, spec.num_params)
    params[0, gas_bias], params[2, gas_bias] = -10.0, 10.0  # no gas, half gas (zeros), full gas
    env = make_env(gas_rewarding_model(), max_steps=10)
    fitness = env.evaluate_candidates(spec, params, rollouts_per_candidate=2, seed=0)
    assert fitness[0] < fitness[1] < fitness[2]
    assert abs(float(fitness[0])) < 1e-3  # no gas, no reward


def test_worlds_are_shared_by_envs_with_the_same_world_index():
    """num_worlds W: env b plays world b % W (start token and every uniform), so envs b and b + W given the same
    actions play the same episode, and envs of different worlds do not."""
    B, W, T = 6, 2, 8
    env = make_env(tiny_model(), B, num_worlds=W, start_tokens=torch.arange(K))
    actions = random_actions(T, W).repeat(1, B // W, 1)  # (T, B, 3): env b gets the actions of world b % W
    steps = play(env, 5, actions)
    tokens = torch.stack([s[-2] for s in steps])  # (T + 1, B)
    rewards = torch.stack([s[1] for s in steps[1:]])  # (T, B)
    for b in range(W, B):
        assert torch.equal(tokens[:, b], tokens[:, b % W])
        torch.testing.assert_close(rewards[:, b], rewards[:, b % W])  # (a batched matmul may round rows apart)
    assert not torch.equal(tokens[:, 0], tokens[:, 1])
    with pytest.raises(ValueError, match="multiple of num_worlds"):
        make_env(tiny_model(), 5, num_worlds=2)


def test_settings_are_checked():
    model = tiny_model()
    with pytest.raises(ValueError, match="FSQ has 64 codes but the world model 16"):
        DreamEnv(model, FSQ([4, 4, 4]), torch.arange(K), 2, 1.0, 10, "cpu")
    for kwargs in ({"temperature": 0.0}, {"max_steps": 0}):
        with pytest.raises(ValueError, match="need temperature > 0"):
            make_env(model, 2, **kwargs)
    with pytest.raises(ValueError, match="done_mode"):
        make_env(model, 2, done_mode="never")
    with pytest.raises(ValueError, match="non-empty"):
        make_env(model, 2, start_tokens=torch.tensor([], dtype=torch.long))


def test_make_dream_starts_from_the_first_frames_of_recorded_episodes():
    steps = StepData(
        actions=np.zeros((5, 3), np.float32),
        rewards=np.zeros(5, np.float32),
        terminated=np.zeros(5, bool),
        truncated=np.zeros(5, bool),
        step_offsets=np.array([0, 3, 5]),
        track_seeds=np.zeros(2, np.uint64),
    )
    tokens = Tokens(
        tokens=np.array([9, 1, 1, 1, 4, 2, 2]), codes=np.zeros((7, D), np.float32), steps=steps, levels=[4, 4]
    )
    model = tiny_model().train()
    dream = make_dream(model, tokens, temperature=1.3, max_steps=12)
    assert dream.start_tokens.tolist() == [9, 4]
    assert dream.temperature == 1.3 and dream.max_steps == 12 and dream.num_envs == 1
    assert dream.model is model and not model.training  # sampled in eval mode (no dropout)
    assert dream.fsq.levels_list == FSQ_CFG.levels and dream.device == torch.device("cpu")
    _, info = make_dream(model, tokens, 1.0, 5).reset(0)
    assert int(info["token"]) in (9, 4)
    spec = ControllerSpec("linear", z_dim=D)
    fitness = dream.evaluate_candidates(spec, torch.zeros(3, spec.num_params), rollouts_per_candidate=2, seed=0)
    assert fitness.shape == (3,) and bool((fitness == fitness[0]).all())  # equal candidates, equal worlds
