import numpy as np
import pytest
import torch

from wm.config import FSQConfig, WMConfig, WorldModelConfig
from wm.datafiles import StepData, Tokens
from wm.dream import ContextStarts, DreamEnv, FixedStarts, make_dream
from wm.errors import WmError
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
    settings = {"starts": torch.arange(K), "temperature": 1.0, "max_steps": 50, "device": "cpu"} | kwargs
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
    env = make_env(tiny_model(), 64, starts=pool)
    _, info = env.reset(0)
    assert set(info["token"].tolist()) == {3, 7}
    with pytest.raises(ValueError):
        make_env(tiny_model(), 4, starts=torch.tensor([K]))


def recorded(tokens: list[int], step_offsets: list[int], actions: np.ndarray | None = None) -> Tokens:
    """A hand-built token dataset (episode e has step_offsets[e+1] - step_offsets[e] steps, one more frame)."""
    n_steps = step_offsets[-1]
    steps = StepData(
        actions=np.zeros((n_steps, 3), np.float32) if actions is None else actions,
        rewards=np.zeros(n_steps, np.float32),
        terminated=np.zeros(n_steps, bool),
        truncated=np.zeros(n_steps, bool),
        step_offsets=np.array(step_offsets),
        track_seeds=np.zeros(len(step_offsets) - 1, np.uint64),
    )
    return Tokens(np.array(tokens), np.zeros((len(tokens), D), np.float32), steps, [4, 4])


def test_context_starts_at_the_first_frames():
    data = recorded([10, 11, 12, 13, 14, 15, 16], [0, 3, 5])  # frames [0, 4) and [4, 7)
    env = make_env(tiny_model(), 64, starts=ContextStarts(data))
    _, info = env.reset(0)
    assert set(info["token"].tolist()) == {10, 14}
    assert not info["h"].any()  # no warm-up: a cold LSTM


def test_context_starts_warm_up_on_real_steps_anywhere():
    """After L teacher-forced real steps, a dream world holds the LSTM state of the real prefix and the next
    real frame's token; starts lie anywhere in the episodes, never past the last frame."""
    g = np.random.default_rng(0)
    actions = g.uniform(0, 1, (12, 3)).astype(np.float32)
    tokens = list(range(14))  # one episode of 12 steps (13 frames) ... and one of 0 steps, never usable
    data = recorded(tokens, [0, 12, 12], actions)
    model = tiny_model()
    L = 3
    env = make_env(model, 256, starts=ContextStarts(data, warmup=L, anywhere=True))
    _, info = env.reset(5)
    starts = info["token"] - L  # frame index of each world's first warm-up frame
    assert int(starts.min()) >= 0 and int(info["token"].max()) <= 12
    assert len(set(starts.tolist())) > 5  # spread over the episode
    s = int(starts[0])
    with torch.no_grad():
        out = model(torch.tensor([tokens[s : s + L]]), torch.from_numpy(actions[s : s + L])[None])
    torch.testing.assert_close(info["h"][0], out.state[0][-1, 0])
    with pytest.raises(WmError, match="no recorded episode is longer.*lower ctrl.dream_warmup"):
        ContextStarts(data, warmup=12)


def test_fixed_starts_give_world_w_its_token():
    env = make_env(tiny_model(), 6, num_worlds=6, starts=FixedStarts(torch.tensor([5, 9, 2])))
    _, info = env.reset(0)
    assert info["token"].tolist() == [5, 9, 2, 5, 9, 2]
    with pytest.raises(ValueError, match="evenly"):
        make_env(tiny_model(), 4, starts=FixedStarts(torch.tensor([5, 9, 2]))).reset(0)


def test_hopeless_episodes_end():
    """With hopeless_steps, an episode ends after that many consecutive steps of negative predicted reward."""
    model = tiny_model()
    with torch.no_grad():
        model.reward_head.weight.zero_()
        model.reward_head.bias.fill_(-0.5 * model.reward_scale)  # reward -0.5 every step
    env = make_env(model, 4, hopeless_steps=7, max_steps=50)
    env.reset(0)
    for t in range(7):
        _, reward, terminated, _, _ = env.step(torch.zeros(4, 3))
        assert bool(terminated.all()) == (t == 6)
    assert make_env(model, 4).rollout(lambda obs: torch.zeros(4, 3), 0, False).tolist() == [-25.0] * 4


def test_dropout_masks_are_fixed_per_world_and_episode():
    wm_cfg = WM_CFG.model_copy(update={"dropout": 0.5})
    model = WorldModel(WorldModelConfig(wm=wm_cfg, fsq=FSQ_CFG)).eval()
    with pytest.raises(ValueError, match="wm.dropout > 0"):
        make_env(tiny_model(), 4, dropout_masks=True)
    env = make_env(model, 8, num_worlds=4, dropout_masks=True)
    env.reset(3)
    mask = env.mask.clone()
    assert set(mask.unique().tolist()) == {0.0, 2.0}  # kept units scaled by 1 / (1 - p)
    assert torch.equal(mask[:4], mask[4:]) and not torch.equal(mask[0], mask[1])  # per world
    env.step(torch.zeros(8, 3))
    assert torch.equal(env.mask, mask)  # kept for the episode
    env.reset(4)
    assert not torch.equal(env.mask, mask)


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


def action_rewarding_model(action: int) -> WorldModel:
    """A hand-set world model whose reward rises with one action (0 steering, 1 gas) and whose episodes never
    terminate: reward = tanh(tanh(4 * action)) / wm.reward_scale in environment units.

    LSTM gate order is (input, forget, cell, output): open input and output gates, closed forget gate,
    cell input tanh(4 * action) on unit 0, so h_0 = tanh(tanh(4 * action)); the reward head reads h_0."""
    model = tiny_model(done_bias=-20.0)
    E = WM_CFG.embed_dim
    with torch.no_grad():
        lstm = model.lstm
        for p in (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0):
            p.zero_()
        lstm.bias_ih_l0[:H] = 10.0  # input gate open
        lstm.bias_ih_l0[H : 2 * H] = -10.0  # forget gate closed: h depends on this step's input only
        lstm.weight_ih_l0[2 * H, E + action] = 4.0  # cell input of unit 0 <- the action
        lstm.bias_ih_l0[3 * H :] = 10.0  # output gate open
        model.reward_head.weight.zero_()
        model.reward_head.weight[0, 0] = 1.0
        model.reward_head.bias.zero_()
    return model


def gas_rewarding_model() -> WorldModel:
    return action_rewarding_model(1)


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
    env = make_env(tiny_model(), B, num_worlds=W, starts=torch.arange(K))
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
        make_env(model, 2, starts=torch.tensor([], dtype=torch.long))


def test_make_dream_starts_from_the_first_frames_of_recorded_episodes():
    tokens = recorded([9, 1, 1, 1, 4, 2, 2], [0, 3, 5])
    model = tiny_model().train()
    dream = make_dream(model, ContextStarts(tokens), temperature=1.3, max_steps=12)
    assert dream.temperature == 1.3 and dream.max_steps == 12 and dream.num_envs == 1
    assert dream.model is model and not model.training  # sampled in eval mode (no dropout)
    assert dream.fsq.levels_list == FSQ_CFG.levels and dream.device == torch.device("cpu")
    _, info = make_dream(model, ContextStarts(tokens), 1.0, 5).reset(0)
    assert int(info["token"]) in (9, 4)
    spec = ControllerSpec("linear", z_dim=D)
    fitness = dream.evaluate_candidates(spec, torch.zeros(3, spec.num_params), rollouts_per_candidate=2, seed=0)
    assert fitness.shape == (3,) and bool((fitness == fitness[0]).all())  # equal candidates, equal worlds


def test_pessimism_subtracts_the_spread_over_rollouts():
    spec = ControllerSpec("linear", z_dim=D)
    params = torch.zeros(2, spec.num_params)
    params[1, 3 * spec.obs_dim] = 3.0  # steers: another reward
    env = make_env(tiny_model(), max_steps=8, temperature=2.0)
    plain = env.evaluate_candidates(spec, params, 6, seed=1)
    careful = env.evaluate_candidates(spec, params, 6, seed=1, pessimism=2.0)
    spread = env.evaluate_candidates(spec, params, 6, seed=1, pessimism=1.0)
    torch.testing.assert_close(plain - careful, 2 * (plain - spread))  # linear in the pessimism
    assert bool((careful <= plain).all()) and bool((careful < plain).any())
