"""Stage `encode`: every frame of data/rollouts.h5 -> its FSQ token and code in data/tokens.h5."""

from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from tqdm import tqdm

from wm.cli import MetricsOut, ParamsOption, RolloutsIn, VaeIn, load_config, run
from wm.config import vae_fingerprint
from wm.data import Rollouts, write_tokens
from wm.models.fsq_vae import FSQVAE, codebook_stats
from wm.training import load_trained
from wm.utils import resolve_device, write_json


def main(
    params: ParamsOption = Path("params.yaml"),
    data: RolloutsIn = Path("data/rollouts.h5"),
    vae: VaeIn = Path("models/vae.pt"),
    out: Annotated[Path, typer.Option(help="Output HDF5 file of tokens.")] = Path("data/tokens.h5"),
    metrics: MetricsOut = Path("metrics/encode.json"),
) -> None:
    """Encode all frames in batches; tokens stay aligned with actions, rewards and done flags."""
    cfg = load_config(params)
    device = resolve_device(cfg.device)
    model = FSQVAE(cfg.fsq, cfg.vae).to(device).eval()
    model.load_state_dict(load_trained(vae, vae_fingerprint(cfg), "train_vae", device)["best_model"])
    with Rollouts(data) as rollouts:
        n, bs = rollouts.frames.shape[0], cfg.encode.batch_size
        tokens = np.empty(n, np.int64)
        codes = np.empty((n, cfg.fsq.dim), np.float32)
        for i in tqdm(range(0, n, bs), desc="encode", unit="batch", mininterval=1.0):
            frames = torch.from_numpy(rollouts.frames[i : i + bs]).to(device)  # (B, H, W, C) uint8
            idx, z = model.encode(frames)
            tokens[i : i + bs], codes[i : i + bs] = idx.cpu().numpy(), z.cpu().numpy()
        write_tokens(out, tokens, codes, rollouts.steps, {"levels": cfg.fsq.levels, "seed": cfg.seed})
    stats = codebook_stats(torch.from_numpy(tokens), cfg.fsq.codebook_size)
    summary = {"encode/all/frames": n} | {f"encode/all/{k}": v for k, v in stats.items()}
    write_json(metrics, summary)
    print(f"encode: {n} frames -> {out}; codebook usage {stats['usage']:.1%}, perplexity {stats['perplexity']:.1f}")


if __name__ == "__main__":
    run(main)
