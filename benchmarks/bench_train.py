"""Training throughput of the default-size models: FSQ-VAE images/s and world-model tokens/s.

    .venv/bin/python benchmarks/bench_train.py             # CPU, and CUDA when present
    .venv/bin/python benchmarks/bench_train.py --steps 5   # a quick smoke run

One "image" is one 64x64 frame through forward, backward and an AdamW step at the default batch size;
one "token" is one (token, action) step of a training window (batch x seq_len per optimizer step). The
data is random and already on the device, which is how the stages feed a dataset that fits in memory.
Each rate is the best of --repeats timed runs (other processes on a shared machine only slow runs down).
"""

from __future__ import annotations

import argparse
import time

import torch
from common import add_devices_option, devices

from wm.config import WorldModelAgentConfig
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel


def training_rate(model: torch.nn.Module, batch, items: int, steps: int, repeats: int, device: torch.device) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss, _ = model.compute_loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: allocator, cuDNN autotuning
    best = 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, items * steps / (time.perf_counter() - t0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vae-batch", type=int, default=None, help="default: vae.batch_size of params")
    add_devices_option(parser)
    args = parser.parse_args()
    cfg = WorldModelAgentConfig()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"{'device':>6} {'model':>10} {'batch':>12} {'rate':>16}")
    for device in devices(args):
        g = torch.Generator().manual_seed(0)
        vae_batch = args.vae_batch or (cfg.vae.batch_size if device.type == "cpu" else 1024)
        frames = torch.randint(0, 256, (vae_batch, 64, 64, 3), dtype=torch.uint8, generator=g).to(device)
        vae = FSQVAE(cfg.fsq_vae).to(device)
        rate = training_rate(vae, frames, vae_batch, args.steps, args.repeats, device)
        print(f"{device.type:>6} {'fsq-vae':>10} {vae_batch:>12} {rate:>10,.0f} img/s")
        B, T = (cfg.wm.batch_size, cfg.wm.seq_len) if device.type == "cpu" else (1024, cfg.wm.seq_len)
        K = cfg.fsq.codebook_size
        batch = {
            "tokens": torch.randint(0, K, (B, T + 1), generator=g).to(device),
            "actions": torch.rand(B, T, 3, generator=g).to(device),
            "rewards": torch.rand(B, T, generator=g).to(device),
            "dones": torch.zeros(B, T).to(device),
        }
        wm = WorldModel(cfg.world_model).to(device)
        rate = training_rate(wm, batch, B * T, args.steps, args.repeats, device)
        print(f"{device.type:>6} {'world-model':>10} {f'{B}x{T}':>12} {rate:>10,.0f} tokens/s")


if __name__ == "__main__":
    main()
