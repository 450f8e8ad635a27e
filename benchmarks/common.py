"""What the benchmark scripts share: the --devices option."""

from __future__ import annotations

import argparse

import torch


def add_devices_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices",
        nargs="+",
        choices=["cpu", "cuda"],
        default=None,
        help="devices to measure (default: cpu, and cuda when torch sees a GPU)",
    )


def devices(args: argparse.Namespace) -> list[torch.device]:
    names = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in names and not torch.cuda.is_available():
        raise SystemExit("--devices cuda: torch sees no GPU")
    return [torch.device(n) for n in names]
