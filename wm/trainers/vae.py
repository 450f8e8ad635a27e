"""`VAETrainer`: the FSQ-VAE on the frames of a rollouts file, and its validation metrics."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from wm.batches import FrameLoader, episode_frame_indices, split_episodes
from wm.checkpoints import ResumeCache
from wm.config import WorldModelAgentConfig, vae_fingerprint
from wm.datafiles import Rollouts
from wm.files import atomic_path
from wm.metrics import write_history
from wm.models.fsq_vae import FSQVAE, codebook_stats, frames_to_tensor
from wm.runtime import RuntimeSettings, load_runtime, resolve_device
from wm.training import TrainResult, TrainSpec, epoch_generator, train


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


def save_recon_grid(model: FSQVAE, frames: torch.Tensor, path: Path, scale: int = 2) -> None:
    """PNG of originals (top row) above their reconstructions (bottom row), upscaled `scale`x."""
    with torch.no_grad():
        recon = model(frames).recon  # (N, 3, H, W) in [0, 1]
    rec = (recon.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()  # (N, H, W, 3)
    orig = frames.cpu().numpy()  # (N, H, W, 3)
    grid = np.concatenate([np.concatenate(list(orig), axis=1), np.concatenate(list(rec), axis=1)], axis=0)
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, grid, extension=".png")


class VAETrainer:
    """Train an FSQ-VAE on the frames of a rollouts file (AdamW, validation split by episode).

    >>> vae = FSQVAE(config.fsq_vae)
    >>> result = VAETrainer(vae, config).fit("data/rollouts.h5")
    >>> result.selected["vae/val/psnr"]
    """

    def __init__(self, vae: FSQVAE, config: WorldModelAgentConfig, runtime: RuntimeSettings | None = None):
        self.vae, self.config = vae, config
        self.runtime = runtime or load_runtime()
        self.device = resolve_device(config.device)
        self.result: TrainResult | None = None

    def fit(self, rollouts: str | Path, metrics: Path | None = None, plots: Path | None = None) -> TrainResult:
        """Train (resuming when possible); `vae` ends with the weights of the best validation epoch."""
        cfg, rt = self.config, self.runtime
        with Rollouts(rollouts) as data:
            train_eps, val_eps = split_episodes(data.steps.num_episodes, cfg.vae.val_fraction, cfg.seed)
            offsets, limit = data.steps.step_offsets, rt.load_limit_gb * 1e9
            train_idx, val_idx = episode_frame_indices(offsets, train_eps), episode_frame_indices(offsets, val_eps)
            train_frames = FrameLoader(
                data.frames, train_idx, cfg.vae.batch_size, self.device, limit, cfg.vae.max_frames
            )
            val_frames = FrameLoader(data.frames, val_idx, cfg.encode.batch_size, self.device, limit)
            # A fixed, evenly spaced sample of validation frames for the reconstruction grid.
            grid = torch.from_numpy(data.frames[np.unique(val_idx[np.linspace(0, len(val_idx) - 1, 8).astype(int)])])
            print(
                f"vae: {len(train_frames)} training frames ({len(train_eps)} episodes), "
                f"{len(val_frames)} validation frames ({len(val_eps)} episodes) on {self.device}"
            )

            def on_epoch(model: FSQVAE, result: TrainResult) -> None:
                write_history(
                    metrics, None if plots is None else plots / "history.csv", result.history, result.selected
                )
                if plots is not None:
                    save_recon_grid(model, grid.to(self.device), plots / "recon.png")

            self.result = train(
                self.vae,
                TrainSpec("vae", cfg.vae.epochs, cfg.vae.lr, cfg.vae.weight_decay, grad_clip=None, select="mse"),
                ResumeCache.for_run(rt.cache_dir, "vae", vae_fingerprint(cfg), "epochs", self.device.type, __name__),
                train_batches=lambda epoch: train_frames.epoch(epoch_generator(cfg.seed, epoch)),
                evaluate=lambda m: vae_validation(m, val_frames.epoch(None)),
                device=self.device,
                on_epoch=on_epoch,
                batches_per_epoch=math.ceil(len(train_frames) / cfg.vae.batch_size),
                progress=rt.progress,
            )
        self.vae.load_state_dict(self.result.best_model)
        return self.result

    def publish(self, path: str | Path) -> None:
        """Write the selected weights as a weights-only model file (after `fit`)."""
        assert self.result is not None, "fit first"
        self.vae.publish(Path(path), vae_fingerprint(self.config), self.result.selected, self.result.best_model)
