"""Frames -> tokens: every frame of a rollouts file through the FSQ-VAE encoder, into a tokens file."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from wm.datafiles import Rollouts, prefetched, read_frame_range, write_tokens
from wm.interrupt import raise_if_interrupted
from wm.models.fsq_vae import FSQVAE, codebook_stats


@torch.no_grad()
def encode_rollouts(vae: FSQVAE, rollouts: str | Path, out: str | Path, batch_size: int, progress: bool = True) -> dict:
    """Encode all frames in batches (on the VAE's device) and write `out` with the token and FSQ code of every
    frame, aligned with the rollouts' actions, rewards and done flags. Returns codebook metrics."""
    device = next(vae.parameters()).device
    vae.eval()
    with Rollouts(rollouts) as r:
        n = r.frames.shape[0]
        tokens = np.empty(n, np.int64)
        codes = np.empty((n, vae.fsq.dim), np.float32)
        starts = range(0, n, batch_size)
        batches = prefetched(functools.partial(read_frame_range, r.frames, i, min(i + batch_size, n)) for i in starts)
        for i, batch in zip(
            tqdm(starts, desc="encode", unit="batch", disable=not progress, mininterval=1.0), batches, strict=True
        ):
            raise_if_interrupted()
            frames = torch.from_numpy(batch).to(device)  # (B, H, W, C) uint8
            idx, z = vae.encode(frames)
            tokens[i : i + batch_size], codes[i : i + batch_size] = idx.cpu().numpy(), z.cpu().numpy()
        write_tokens(
            out, tokens, codes, r.steps, {"levels": vae.config.fsq.levels, "seed": int(r.attrs.get("seed", 0))}
        )
    stats = codebook_stats(torch.from_numpy(tokens), vae.codebook_size)
    return {"encode/all/frames": n} | {f"encode/all/{k}": v for k, v in stats.items()}
