import math

import torch

from wm.config import FSQConfig, VAEConfig, WMConfig
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel, WorldModelOutput


def test_param_count_and_shapes():
    fsq = FSQConfig()
    model = WorldModel(WMConfig(), fsq)
    assert sum(p.numel() for p in model.parameters()) == 914_347
    B, T, K = 3, 5, fsq.codebook_size
    tokens = torch.randint(0, K, (B, T))
    actions = torch.randn(B, T, 3)
    out = model(tokens, actions)
    assert isinstance(out, WorldModelOutput)
    assert out.logits.shape == (B, T, K) and out.reward.shape == (B, T) and out.done_logit.shape == (B, T)
    assert out.state[0].shape == (1, B, 256) and out.state[1].shape == (1, B, 256)
    logits, reward, done, state = model.step(tokens[:, 0], actions[:, 0], model.initial_state(B, "cpu"))
    assert logits.shape == (B, K) and reward.shape == (B,) and done.shape == (B,)
    assert WorldModel.hidden_of(state).shape == (B, 256)


def test_code_input_is_the_fsq_code_of_the_token():
    """With the lookup table zeroed, only the code path tells tokens apart, and it must feed each token
    the code the FSQ-VAE's quantizer gives that index (the encode stage's token <-> code)."""
    torch.manual_seed(0)
    fsq = FSQConfig(levels=[8, 5, 3])
    tokens = torch.tensor([[0, 7, 8, 119]])
    actions = torch.zeros(1, 4, 3)
    for code_input in (True, False):
        model = WorldModel(WMConfig(embed_dim=8, hidden=16, code_input=code_input), fsq)
        with torch.no_grad():
            model.embed.weight.zero_()
            states = [model(tokens[:, t : t + 1], actions[:, :1]).state[0] for t in range(4)]
        distinct = len({tuple(s.flatten().tolist()) for s in states})
        assert distinct == (4 if code_input else 1)
    vae = FSQVAE(fsq, VAEConfig())
    frames = torch.randint(0, 256, (64, 64, 64, 3), dtype=torch.uint8)
    indices, codes = vae.encode(frames)  # what the encode stage writes
    model = WorldModel(WMConfig(code_input=True), fsq)
    torch.testing.assert_close(model.codes[indices], codes)
    assert "codes" not in model.state_dict()  # derived from the levels, not saved in checkpoints


def test_step_matches_forward():
    torch.manual_seed(0)
    fsq = FSQConfig(levels=[4, 4])
    model = WorldModel(WMConfig(embed_dim=8, hidden=32), fsq)
    B, T = 4, 7
    tokens = torch.randint(0, 16, (B, T))
    actions = torch.randn(B, T, 3)
    out = model(tokens, actions)
    state = model.initial_state(B, "cpu")
    for t in range(T):
        logits, reward, done, state = model.step(tokens[:, t], actions[:, t], state)
        torch.testing.assert_close(logits, out.logits[:, t])
        torch.testing.assert_close(reward, out.reward[:, t])
        torch.testing.assert_close(done, out.done_logit[:, t])
    torch.testing.assert_close(state[0], out.state[0])
    torch.testing.assert_close(WorldModel.hidden_of(state), out.state[0][-1])


def synthetic_batch(B: int, T: int, K: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """next = (token + round(2 * steer)) % K with steer in {-1, -.5, 0, .5, 1}; reward = steer; done rare."""
    steer = (torch.randint(0, 5, (B, T), generator=gen) - 2).float() / 2
    actions = torch.cat([steer[..., None], torch.rand(B, T, 2, generator=gen)], dim=-1)
    tokens = torch.empty(B, T + 1, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, K, (B,), generator=gen)
    for t in range(T):
        tokens[:, t + 1] = (tokens[:, t] + torch.round(2 * steer[:, t]).long()) % K
    dones = (tokens[:, :-1] == 0).float()  # the episode "ends" whenever the car is at token 0
    return {"tokens": tokens, "actions": actions, "rewards": 10 * steer, "dones": dones}


def test_learns_deterministic_dynamics():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    fsq = FSQConfig(levels=[4, 4])
    model = WorldModel(WMConfig(embed_dim=16, hidden=64), fsq)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        loss, _ = model.compute_loss(synthetic_batch(64, 16, 16, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, metrics = model.compute_loss(synthetic_batch(256, 16, 16, gen))
    assert metrics["acc"] >= 0.95, metrics
    assert metrics["acc"] > metrics["repeat_acc"] + 0.5
    assert metrics["top5"] >= metrics["acc"]
    assert metrics["reward_mse"] < 1.0  # env units^2, rewards span [-10, 10]
    n_done = metrics["done_tp"] + metrics["done_fn"]
    assert n_done > 0 and metrics["done_tp"] / n_done > 0.9


def test_metrics_hand_example():
    fsq = FSQConfig(levels=[2, 2])
    wm = WMConfig(embed_dim=4, hidden=8, reward_scale=0.5, reward_weight=2.0, done_weight=3.0)
    model = WorldModel(wm, fsq)
    batch = {
        "tokens": torch.tensor([[1, 1, 2, 2, 3]]),  # targets [1, 2, 2, 3]: 2 of 4 repeat the input
        "actions": torch.zeros(1, 4, 3),
        "rewards": torch.tensor([[1.0, -2.0, 0.0, 4.0]]),
        "dones": torch.tensor([[0.0, 0.0, 0.0, 1.0]]),
    }
    with torch.no_grad():
        # Force known predictions: reward head outputs scaled 1.0 -> 2.0 env units; done logits via bias.
        for head in (model.token_head, model.reward_head, model.done_head):
            head.weight.zero_()
        model.token_head.bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))  # always predicts token 2
        model.reward_head.bias.fill_(1.0)
        model.done_head.bias.fill_(2.0)  # always predicts done
        loss, m = model.compute_loss(batch)
    assert math.isclose(m["repeat_acc"], 0.5)
    assert math.isclose(m["acc"], 0.5)  # targets 2, 2 hit
    assert math.isclose(m["top5"], 1.0)
    assert math.isclose(m["reward_mse"], ((2 - 1) ** 2 + 4**2 + 2**2 + 2**2) / 4, rel_tol=1e-5)
    assert (m["done_tp"], m["done_fp"], m["done_fn"]) == (1.0, 3.0, 0.0)
    expected = m["ce"] + 2.0 * m["reward_mse"] * 0.5**2 + 3.0 * m["done_bce"]
    assert math.isclose(m["loss"], expected, rel_tol=1e-5) and math.isclose(loss.item(), m["loss"])
