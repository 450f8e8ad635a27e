"""Validation metrics of the trained models and the VAE's reconstruction grid."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from wm.models.fsq_vae import FSQVAE, codebook_stats, frames_to_tensor
from wm.models.world_model import WorldModel
from wm.utils import atomic_path


def vae_validation(model: FSQVAE, batches: Iterable[torch.Tensor]) -> dict[str, float]:
    """Dataset-level reconstruction MSE and PSNR, codebook usage and perplexity over all batches."""
    sq_err, n_values, indices = 0.0, 0, []
    for frames in batches:
        out = model(frames)
        x = frames_to_tensor(frames)
        sq_err += float(((out.recon - x) ** 2).sum())
        n_values += x.numel()
        indices.append(out.indices)
    mse = sq_err / n_values
    stats = codebook_stats(torch.cat(indices), model.codebook_size)
    return {"mse": mse, "psnr": 10 * math.log10(1 / max(mse, 1e-10))} | stats


def wm_validation(model: WorldModel, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Window-weighted means of the world model's metrics; done precision/recall from summed counts."""
    sums: dict[str, float] = {}
    n = 0
    for batch in batches:
        _, metrics = model.compute_loss(batch)
        b = batch["tokens"].shape[0]
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + (v if k.startswith("done_") and k != "done_bce" else v * b)
        n += b
    tp, fp, fn = (sums.pop(k) for k in ("done_tp", "done_fp", "done_fn"))
    out = {k: v / n for k, v in sums.items()}
    # With no predicted (or no true) terminations the ratio is undefined; report 0 rather than NaN so
    # `dvc metrics diff` stays numeric.
    out["done_precision"] = tp / (tp + fp) if tp + fp else 0.0
    out["done_recall"] = tp / (tp + fn) if tp + fn else 0.0
    out["done_true"] = tp + fn
    return out


def save_recon_grid(model: FSQVAE, frames: torch.Tensor, path: Path, scale: int = 2) -> None:
    """PNG of originals (top row) above their reconstructions (bottom row), upscaled `scale`x."""
    with torch.no_grad():
        recon = model(frames).recon  # (N, 3, H, W) in [0, 1]
    rec = (recon.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    orig = frames.cpu().numpy()  # (N, H, W, 3)
    grid = np.concatenate([np.concatenate(list(orig), axis=1), np.concatenate(list(rec), axis=1)], axis=0)
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, grid, extension=".png")
