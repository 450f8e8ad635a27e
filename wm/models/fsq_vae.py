"""FSQ-VAE: a convolutional autoencoder whose bottleneck is one FSQ token per frame.

The conv stack follows Ha & Schmidhuber 2018 ("World Models", arXiv 1803.10122, appendix A.1): four stride-2
4x4 convolutions with 32/64/128/256 channels, mirrored by transposed convolutions. Padding 1 makes the
spatial sizes exact powers of two (64 -> 32 -> 16 -> 8 -> 4). The Gaussian latent of their VAE is
replaced by Finite Scalar Quantization (Mentzer et al. 2023), so a frame becomes one integer token in
[0, prod(levels)) that the world model treats as a word; the loss is plain reconstruction MSE because
FSQ has no codebook to commit to (paper, Sec. 3).

Notation: B = batch, C = channels, H = W = 64 pixels, D = FSQ dimension, K = codebook size.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wm.checkpoints import PublishedModule
from wm.config import FSQVAEConfig
from wm.frames import FRAME_SIZE
from wm.models.fsq import FSQ

_BOTTOM = FRAME_SIZE // 2**4  # spatial size after the 4 stride-2 stages: 4


def frames_to_tensor(frames: Tensor) -> Tensor:
    """uint8 frames as stored on disk, (B, H, W, 3) HWC, -> float32 (B, 3, H, W) in [0, 1]."""
    assert frames.dtype == torch.uint8, f"frames must be uint8, got {frames.dtype}"
    assert frames.ndim == 4 and frames.shape[1:] == (FRAME_SIZE, FRAME_SIZE, 3), (
        f"frames must be (B, {FRAME_SIZE}, {FRAME_SIZE}, 3), got {tuple(frames.shape)}"
    )
    return frames.permute(0, 3, 1, 2).float().div_(255.0)  # (B, H, W, C) -> (B, C, H, W)


class FSQVAEOutput(NamedTuple):
    recon: Tensor  # (B, 3, H, W) float in [0, 1]
    codes: Tensor  # (B, D) quantized codes in [-1, 1] (straight-through gradients)
    indices: Tensor  # (B,) int64 tokens in [0, K)


class FSQVAE(PublishedModule, nn.Module):
    """``FSQVAE(cfg.fsq_vae)``; ``encode`` uint8 frames to tokens and codes, ``decode_*`` back to images."""

    kind = "vae"
    config_class = FSQVAEConfig

    def __init__(self, config: FSQVAEConfig) -> None:
        super().__init__()
        self.config = config
        fsq, vae = config.fsq, config.vae
        c1, c2, c3, c4 = vae.channels
        self.bottom_channels = c4
        flat = c4 * _BOTTOM * _BOTTOM
        # Encoder: (B, 3, 64, 64) -> (B, c4, 4, 4) -> (B, latent_dim) -> (B, D).
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c1, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c2, c3, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c3, c4, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),  # (B, c4, 4, 4) -> (B, c4*16)
            nn.Linear(flat, vae.latent_dim),
            # LayerNorm, not ReLU, before the projection: FSQ bounds with tanh, and unnormalised
            # activations grow until every frame lands in the same saturated corner of the grid, where
            # the straight-through gradient vanishes (measured: one code for all frames, seed 1). Unit
            # scale here keeps the projection near tanh's linear range.
            nn.LayerNorm(vae.latent_dim),
            # FSQ quantizes a low-dimensional projection (paper, Sec. 3: d = len(levels) is small).
            nn.Linear(vae.latent_dim, fsq.dim),
        )
        self.fsq = FSQ(fsq.levels)
        # Decoder mirrors the encoder: (B, D) -> (B, latent_dim) -> (B, c4, 4, 4) -> (B, 3, 64, 64).
        self.decoder_fc = nn.Sequential(
            nn.Linear(fsq.dim, vae.latent_dim),
            nn.ReLU(),
            nn.Linear(vae.latent_dim, flat),
            nn.ReLU(),
        )
        self.decoder_conv = nn.Sequential(
            nn.ConvTranspose2d(c4, c3, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c3, c2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c1, 3, 4, stride=2, padding=1),
            nn.Sigmoid(),  # pixels live in [0, 1]
        )

    @property
    def codebook_size(self) -> int:
        return self.fsq.codebook_size

    def _quantize(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        x = frames_to_tensor(frames)  # (B, 3, H, W)
        codes = self.fsq(self.encoder(x))  # (B, D)
        assert codes.shape == (x.shape[0], self.fsq.dim)
        return x, codes

    def _decode(self, codes: Tensor) -> Tensor:
        assert codes.ndim == 2 and codes.shape[1] == self.fsq.dim, f"codes must be (B, D), got {codes.shape}"
        h = self.decoder_fc(codes)  # (B, c4*4*4)
        h = h.view(-1, self.bottom_channels, _BOTTOM, _BOTTOM)  # (B, c4*16) -> (B, c4, 4, 4)
        return self.decoder_conv(h)  # (B, 3, H, W)

    def forward(self, frames: Tensor) -> FSQVAEOutput:
        """(B, H, W, 3) uint8 -> reconstruction, codes and tokens."""
        _, codes = self._quantize(frames)
        return FSQVAEOutput(self._decode(codes), codes, self.fsq.codes_to_indices(codes))

    def compute_loss(self, batch: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Reconstruction MSE on [0, 1] pixels; metrics carry no split prefix."""
        x, codes = self._quantize(batch)
        recon = self._decode(codes)
        assert recon.shape == x.shape
        mse = F.mse_loss(recon, x)
        mse_v = float(mse.detach())
        # PSNR of the batch MSE with peak 1 (images in [0, 1]); clamped so a perfect batch stays finite.
        psnr = 10.0 * math.log10(1.0 / max(mse_v, 1e-10))
        return mse, {"loss": mse_v, "mse": mse_v, "psnr": psnr}

    @torch.no_grad()
    def encode(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """(B, H, W, 3) uint8 -> (indices (B,) int64, codes (B, D)); inference only (no grad)."""
        _, codes = self._quantize(frames)
        return self.fsq.codes_to_indices(codes), codes

    @torch.no_grad()
    def decode_codes(self, codes: Tensor) -> Tensor:
        """(B, D) codes -> (B, 3, H, W) images in [0, 1]; inference only (no grad)."""
        return self._decode(codes)

    @torch.no_grad()
    def decode_indices(self, indices: Tensor) -> Tensor:
        """(B,) tokens -> (B, 3, H, W) images in [0, 1]; inference only (no grad)."""
        return self._decode(self.fsq.indices_to_codes(indices))


def codebook_stats(indices: Tensor, codebook_size: int) -> dict[str, float]:
    """Codebook health of a set of tokens: fraction of the K codes used, and perplexity
    exp(H(p)) of the empirical index distribution (K when uniform, 1 when collapsed)."""
    counts = torch.bincount(indices.flatten().long(), minlength=codebook_size).double()  # (K,)
    assert counts.numel() == codebook_size, "an index is >= codebook_size"
    p = counts / counts.sum().clamp_min(1.0)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"usage": float((counts > 0).double().mean()), "perplexity": float(entropy.exp())}
