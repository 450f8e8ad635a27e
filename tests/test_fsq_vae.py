import math

import pytest
import torch

from wm.config import FSQConfig, FSQVAEConfig, VAEConfig
from wm.errors import WmError
from wm.models.fsq_vae import FSQVAE, FSQVAEOutput, codebook_stats, frames_to_tensor

SMALL = FSQVAEConfig(fsq=FSQConfig(levels=[5, 5]), vae=VAEConfig(latent_dim=8, channels=[8, 8, 16, 16]))


def frames(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 64, 64, 3), dtype=torch.uint8, generator=g)


def test_frames_to_tensor():
    f = frames(2)
    x = frames_to_tensor(f)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    assert torch.equal(x[1, 2, 5, 7], f[1, 5, 7, 2].float() / 255)


def test_shapes_and_param_count():
    fsq = FSQConfig()
    model = FSQVAE(FSQVAEConfig())
    n = sum(p.numel() for p in model.parameters())
    assert n == 1_646_663
    out = model(frames(3))
    assert isinstance(out, FSQVAEOutput)
    assert out.recon.shape == (3, 3, 64, 64) and out.recon.min() >= 0 and out.recon.max() <= 1
    assert out.codes.shape == (3, fsq.dim)
    assert out.indices.shape == (3,) and out.indices.dtype == torch.int64
    idx, codes = model.encode(frames(3))
    assert torch.equal(idx, out.indices) and torch.equal(codes, out.codes)
    assert torch.allclose(model.decode_indices(idx), model.decode_codes(codes))


def smooth_frames(n: int) -> torch.Tensor:
    """Learnable images (a flat colour plus a ramp) rather than noise, which no bottleneck can compress."""
    colours = torch.linspace(0, 1, n)[:, None, None, None] * torch.tensor([1.0, 0.3, 0.7])
    ramp = torch.linspace(0, 0.5, 64)[None, :, None, None]
    images = (colours + ramp).expand(n, 64, 64, 3)  # (B, 1, 1, 3) + (1, 64, 1, 1) -> (B, 64, 64, 3)
    return (images.clamp(0, 1) * 255).to(torch.uint8)


def test_training_lowers_loss():
    torch.manual_seed(0)
    model = FSQVAE(SMALL)
    batch = smooth_frames(8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first, metrics = model.compute_loss(batch)
    assert set(metrics) == {"loss", "mse", "psnr"}
    assert math.isclose(metrics["psnr"], -10 * math.log10(metrics["mse"]), rel_tol=1e-6)
    for _ in range(50):
        loss, _ = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last, _ = model.compute_loss(batch)
    assert last.item() < 0.5 * first.item()


def test_codebook_stats():
    stats = codebook_stats(torch.tensor([0, 0, 1, 1]), 8)
    assert math.isclose(stats["usage"], 2 / 8)
    assert math.isclose(stats["perplexity"], 2.0, rel_tol=1e-9)
    stats = codebook_stats(torch.tensor([[3, 3], [3, 3]]), 4)
    assert math.isclose(stats["usage"], 0.25) and math.isclose(stats["perplexity"], 1.0)
    stats = codebook_stats(torch.arange(6), 6)
    assert math.isclose(stats["usage"], 1.0) and math.isclose(stats["perplexity"], 6.0, rel_tol=1e-9)


def test_publish_and_from_file_round_trip(tmp_path):
    """A published file rebuilds the same model (config included) from weights only, in eval mode."""
    torch.manual_seed(0)
    model = FSQVAE(SMALL)
    path = tmp_path / "vae.pt"
    fingerprint = {"seed": 0, "vae": {"lr": 0.001}}
    model.publish(path, fingerprint, {"epoch": 1})
    raw = torch.load(path, weights_only=True)  # no pickled objects: plain tensors and JSON strings
    assert raw["kind"] == "vae" and set(raw["state_dict"]) == set(model.state_dict())

    loaded = FSQVAE.from_file(path, fingerprint)
    assert not loaded.training and loaded.config == SMALL and loaded.codebook_size == 25
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    f = frames(4)
    assert torch.equal(loaded(f).recon, model.eval()(f).recon)
    assert torch.equal(FSQVAE.from_file(path).encode(f)[0], model.encode(f)[0])  # no fingerprint: no check

    with pytest.raises(WmError, match=r"trained under other params \(vae\.lr\).*dvc repro train_vae"):
        FSQVAE.from_file(path, {"seed": 0, "vae": {"lr": 0.002}})
