import math

import pytest
import torch
import torch.nn.functional as F

from wm.config import FSQConfig, FSQVAEConfig, WMConfig, WorldModelConfig
from wm.errors import WmError
from wm.metrics import Count
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel, WorldModelOutput


def make(fsq: FSQConfig | None = None, **wm) -> WorldModel:
    return WorldModel(WorldModelConfig(wm=WMConfig(**wm), fsq=fsq or FSQConfig()))


def test_param_count_and_shapes():
    fsq = FSQConfig()
    model = make(fsq)
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
        model = make(fsq, embed_dim=8, hidden=16, code_input=code_input)
        with torch.no_grad():
            model.embed.weight.zero_()
            states = [model(tokens[:, t : t + 1], actions[:, :1]).state[0] for t in range(4)]
        distinct = len({tuple(s.flatten().tolist()) for s in states})
        assert distinct == (4 if code_input else 1)
    vae = FSQVAE(FSQVAEConfig(fsq=fsq))
    frames = torch.randint(0, 256, (64, 64, 64, 3), dtype=torch.uint8)
    indices, codes = vae.encode(frames)  # what the encode stage writes
    model = make(fsq, code_input=True)
    torch.testing.assert_close(model.codes[indices], codes)
    assert "codes" not in model.state_dict()  # derived from the levels, not saved in checkpoints


def test_step_matches_forward():
    torch.manual_seed(0)
    fsq = FSQConfig(levels=[4, 4])
    model = make(fsq, embed_dim=8, hidden=32)
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


def test_copy_logit_is_added_to_the_current_token():
    """logits = token_head(h) + copy_logit on the current token and nothing elsewhere; copy_logit is a
    trained, saved parameter that starts at 2 (a head start for "next frame = this frame")."""
    torch.manual_seed(0)
    model = make(FSQConfig(levels=[4, 4]), embed_dim=8, hidden=16)
    assert model.copy_logit.requires_grad and "copy_logit" in model.state_dict()
    assert model.copy_logit.item() == 2.0
    heads = []
    model.token_head.register_forward_hook(lambda module, args, out: heads.append(out))
    tokens = torch.randint(0, 16, (3, 6))
    actions = torch.randn(3, 6, 3)
    for value in (2.0, 1.25, -0.5):  # the forward pass reads the parameter, not a constant
        heads.clear()
        with torch.no_grad():
            model.copy_logit.fill_(value)
            out = model(tokens, actions)
            step_logits, *_ = model.step(tokens[:, 0], actions[:, 0], None)
        torch.testing.assert_close(out.logits - heads[0], value * F.one_hot(tokens, 16).float())
        torch.testing.assert_close(step_logits - heads[1][:, 0], value * F.one_hot(tokens[:, 0], 16).float())


def test_untrained_model_repeats_the_current_token():
    """Most consecutive frames share a token: thanks to the copy logit an untrained model (the trained size,
    K = 1000) already predicts "same as now", and the gradient on repeating data raises the copy logit."""
    torch.manual_seed(0)
    model = make()
    B, T = 8, 16
    tokens = torch.randint(0, 1000, (B, T))
    with torch.no_grad():
        logits = model(tokens, torch.randn(B, T, 3)).logits
    assert torch.equal(logits.argmax(-1), tokens)  # whatever the token, before any training

    repeating = torch.randint(0, 1000, (B, 1)).expand(B, T + 1)
    zeros = torch.zeros(B, T)
    batch = {"tokens": repeating, "actions": torch.randn(B, T, 3), "rewards": zeros, "dones": zeros}
    loss, m = model.compute_loss(batch)
    assert m["repeat_acc"] == 1.0 and m["acc"] == 1.0
    loss.backward()
    assert model.copy_logit.grad is not None and model.copy_logit.grad < 0  # gradient descent raises it


def test_publish_and_from_file_round_trip(tmp_path):
    torch.manual_seed(0)
    fsq = FSQConfig(levels=[4, 4])
    model = make(fsq, embed_dim=8, hidden=16)
    with torch.no_grad():
        model.copy_logit.fill_(0.75)  # a trained value, not the initial one
    path = tmp_path / "wm.pt"
    model.publish(path, {"wm": {"hidden": 16}}, {"epoch": 3})
    raw = torch.load(path, weights_only=True)
    assert raw["kind"] == "wm" and "codes" not in raw["state_dict"]  # derived buffers are not published
    loaded = WorldModel.from_file(path, {"wm": {"hidden": 16}})
    assert not loaded.training and loaded.config == model.config and loaded.copy_logit.item() == 0.75
    tokens, actions = torch.randint(0, 16, (2, 5)), torch.randn(2, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens, actions).logits, model(tokens, actions).logits, rtol=0, atol=0)
    with pytest.raises(WmError, match=r"trained under other params \(wm\.hidden\).*dvc repro train_wm"):
        WorldModel.from_file(path, {"wm": {"hidden": 32}})


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
    # the reward weight of the seed's loss: the default (100) is tuned for CarRacing's rewards, scaled to ~0.1
    model = make(fsq, embed_dim=16, hidden=64, reward_weight=1.0)
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
    model = make(fsq, embed_dim=4, hidden=8, reward_scale=0.5, reward_weight=2.0, done_weight=3.0)
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
    # logits = token head (its bias) + copy_logit (2.0 at initialisation) on the current token
    bias = [0.0, 0.0, 5.0, 0.0]

    def nll(current: int, target: int) -> float:
        logits = [b + (2.0 if k == current else 0.0) for k, b in enumerate(bias)]
        return math.log(sum(math.exp(x) for x in logits)) - logits[target]

    expected_ce = (nll(1, 1) + nll(1, 2) + nll(2, 2) + nll(2, 3)) / 4
    assert math.isclose(m["ce"], expected_ce, rel_tol=1e-5)
    assert math.isclose(m["reward_mse"], ((2 - 1) ** 2 + 4**2 + 2**2 + 2**2) / 4, rel_tol=1e-5)
    assert (m["done_tp"], m["done_fp"], m["done_fn"]) == (1.0, 3.0, 0.0)
    # counts add up over batches (wm.metrics.MetricMeans), means do not
    assert all(isinstance(m[k], Count) for k in ("done_tp", "done_fp", "done_fn"))
    assert not any(isinstance(m[k], Count) for k in ("loss", "ce", "acc", "top5", "repeat_acc", "reward_mse"))
    expected = m["ce"] + 2.0 * m["reward_mse"] * 0.5**2 + 3.0 * m["done_bce"]
    assert math.isclose(m["loss"], expected, rel_tol=1e-5) and math.isclose(loss.item(), m["loss"])
