"""Stage `train_vae`: the FSQ-VAE on the frames of data/rollouts.h5 -> models/vae.pt."""

import math
from pathlib import Path

import numpy as np
import torch

from wm.cli import CheckpointOut, MetricsOut, ParamsOption, PlotsOut, RolloutsIn, load_config, run
from wm.config import vae_fingerprint
from wm.data import FrameLoader, Rollouts, episode_frame_indices, split_episodes
from wm.models.fsq_vae import FSQVAE
from wm.training import TrainSpec, epoch_generator, train, write_history
from wm.utils import resolve_device
from wm.validation import save_recon_grid, vae_validation


def main(
    params: ParamsOption = Path("params.yaml"),
    data: RolloutsIn = Path("data/rollouts.h5"),
    out: CheckpointOut = Path("models/vae.pt"),
    metrics: MetricsOut = Path("metrics/vae.json"),
    plots: PlotsOut = Path("plots/vae"),
) -> None:
    """Train the FSQ-VAE (AdamW, validation split by episode, a checkpoint every epoch)."""
    cfg = load_config(params)
    device = resolve_device(cfg.device)
    with Rollouts(data) as rollouts:
        train_eps, val_eps = split_episodes(rollouts.steps.num_episodes, cfg.vae.val_fraction, cfg.seed)
        offsets = rollouts.steps.step_offsets
        limit = cfg.vae.load_limit_gb * 1e9
        train_frames = FrameLoader(
            rollouts.frames,
            episode_frame_indices(offsets, train_eps),
            cfg.vae.batch_size,
            device,
            limit,
            cfg.vae.max_frames,
        )
        val_frames = FrameLoader(
            rollouts.frames, episode_frame_indices(offsets, val_eps), cfg.encode.batch_size, device, limit
        )
        # A fixed, evenly spaced sample of validation frames for the reconstruction grid.
        grid_idx = np.linspace(0, len(val_frames.indices) - 1, 8).astype(int)
        grid = torch.from_numpy(rollouts.frames[np.unique(val_frames.indices[grid_idx])]).to(device)
        print(
            f"vae: {len(train_frames)} training frames ({len(train_eps)} episodes), "
            f"{len(val_frames)} validation frames ({len(val_eps)} episodes) on {device}"
        )

        model = FSQVAE(cfg.fsq, cfg.vae)
        spec = TrainSpec(
            component="vae",
            epochs=cfg.vae.epochs,
            lr=cfg.vae.lr,
            weight_decay=cfg.vae.weight_decay,
            grad_clip=None,
            checkpoint=out,
            fingerprint=vae_fingerprint(cfg),
            select="mse",
        )

        def on_epoch(model: FSQVAE, history: list[dict]) -> None:
            write_history(history, metrics, plots / "history.csv")
            save_recon_grid(model, grid, plots / "recon.png")

        train(
            model,
            spec,
            train_batches=lambda epoch: train_frames.epoch(epoch_generator(cfg.seed, epoch)),
            evaluate=lambda m: vae_validation(m, val_frames.epoch(None)),
            device=device,
            on_epoch=on_epoch,
            batches_per_epoch=math.ceil(len(train_frames) / cfg.vae.batch_size),
        )


if __name__ == "__main__":
    run(main)
