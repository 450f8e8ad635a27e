"""Dream env-steps/s of the default-size world model at several batch widths, beside the real game.

    .venv/bin/python benchmarks/bench_dream.py            # widths 64 1024 16384, CPU and CUDA if present
    .venv/bin/python benchmarks/bench_dream.py --quick    # fewer steps, for a smoke run

A dream env-step is one env advanced one step (B envs x T steps = B*T env-steps), the unit in which
CMA-ES spends its fitness budget, so the rates compare directly with the real game's steps/s, measured
here in the same process on the same actions budget (stock CarRacing-v3 and FastCarRacing, one env).
The model is randomly initialised: speed does not depend on the weights. Every env keeps stepping for
the whole run (finished envs are masked, not skipped), which is also what a rollout costs. Each rate
is the best of ``--repeats`` runs, which filters out interference from other processes on a shared
machine; on an oversubscribed CPU ``--threads 1`` can beat the default (threads waiting on each other).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np
import torch
from common import add_devices_option, devices

from wm.config import WorldModelConfig
from wm.dream import DreamEnv
from wm.envs import make_car_racing
from wm.models.fsq import FSQ
from wm.models.world_model import WorldModel


def dream_rate(width: int, steps: int, device: torch.device) -> float:
    """Env-steps/s of `steps` dream steps at batch width `width`, after one warm-up step."""
    cfg = WorldModelConfig()
    fsq_cfg = cfg.fsq
    model = WorldModel(cfg).to(device).eval()
    fsq = FSQ(fsq_cfg.levels).to(device)
    start = torch.arange(fsq_cfg.codebook_size)
    env = DreamEnv(model, fsq, start, width, temperature=1.0, max_steps=steps + 1, device=device)
    actions = torch.rand(width, 3, device=device)  # (B, 3); the policy's cost is not what is measured
    env.reset(0)
    env.step(actions)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(actions)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return width * steps / (time.perf_counter() - t0)


def real_rate(fast: bool, steps: int, seed: int) -> float:
    """Steps/s of one real env on seeded random actions, resetting whenever an episode ends."""
    actions = np.random.default_rng(seed).uniform([-1, 0, 0], [1, 1, 1], size=(steps, 3)).astype(np.float32)
    env = make_car_racing(fast=fast)
    env.reset(seed=seed)
    t0 = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset(seed=seed + 1)
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 1024, 16384], help="dream batch widths B")
    parser.add_argument("--env-steps", type=int, default=200, help="real-env steps per measurement")
    parser.add_argument("--quick", action="store_true", help="fewer dream and real steps")
    parser.add_argument("--repeats", type=int, default=2, help="runs per measurement; the best is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    add_devices_option(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # Dream steps T per width: about 2^17 env-steps per run, T clamped to [3, 200] (enough steps to
    # average per-step overhead at small widths, few enough that the widest stays within seconds).
    divisor = 4 if args.quick else 1
    dream_steps = {w: max(1, max(3, min(200, 2**17 // w)) // divisor) for w in args.widths}
    env_steps = args.env_steps // 4 if args.quick else args.env_steps

    rows: list[tuple[str, str, int, float]] = []
    for device in devices(args):
        name = "cpu" if device.type == "cpu" else torch.cuda.get_device_name(device)
        for w in args.widths:
            rate = max(dream_rate(w, dream_steps[w], device) for _ in range(args.repeats))
            rows.append(("dream", name, w, rate))
    for fast in (False, True):
        rate = max(real_rate(fast, env_steps, seed=0) for _ in range(args.repeats))
        rows.append(("real " + ("fast" if fast else "stock"), "cpu", 1, rate))

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, default WMConfig/FSQConfig, "
        f"best of {args.repeats}"
    )
    print(f"{'env':<12}{'device':<24}{'width':>7}{'steps/s':>12}")
    for env, device_name, width, rate in rows:
        print(f"{env:<12}{device_name:<24}{width:>7}{rate:>12.0f}")


if __name__ == "__main__":
    main()
