"""Frames/s of writing and reading rollouts.h5 beside the VAE's training img/s: which one bounds a run.

    .venv/bin/python benchmarks/bench_data.py                       # frames of data/rollouts.h5
    .venv/bin/python benchmarks/bench_data.py --frames 20000 --devices cpu

On the first --frames frames of a rollouts file (real CarRacing frames: compression depends on content):
- gzip levels (and HDF5's LZF): compression ratio, compress and decompress frames/s on one core;
- writing: HDF5's filter pipeline (one chunk at a time, as collect wrote before) against wm's writer, which
  compresses chunks on threads (wm.datafiles._ChunkWriter);
- reading: h5py slicing against wm.datafiles.read_frame_range (chunks decompressed on threads), and the
  VAE's FrameLoader streaming from disk (WM_LOAD_LIMIT_GB below the data) and gathering from memory;
- the FSQ-VAE's training img/s at the default batch size on each device.
A loader slower than the VAE's img/s starves training: keep the data in memory (WM_LOAD_LIMIT_GB) or add cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import torch
from bench_train import training_rate
from common import add_devices_option, devices

from wm.batches import FrameLoader
from wm.config import WorldModelAgentConfig
from wm.datafiles import read_frame_range, write_rollouts
from wm.episodes import Episode
from wm.models.fsq_vae import FSQVAE
from wm.runtime import available_cores


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def codec_table(frames: np.ndarray, tmp: Path) -> None:
    chunks = [frames[i : i + 64].tobytes() for i in range(0, len(frames), 64)]
    raw = sum(map(len, chunks))
    print(f"{'codec':<10}{'ratio':>8}{'compress f/s':>15}{'decompress f/s':>16}   (one core)")
    for level in (1, 4, 6):
        t0 = time.perf_counter()
        packed = [zlib.compress(b, level) for b in chunks]
        t1 = time.perf_counter()
        for b in packed:
            zlib.decompress(b)
        c, d = t1 - t0, time.perf_counter() - t1
        ratio = raw / sum(map(len, packed))
        print(f"{f'gzip {level}':<10}{ratio:>8.2f}{len(frames) / c:>15,.0f}{len(frames) / d:>16,.0f}")
    with h5py.File(tmp / "lzf.h5", "w") as f:
        c = timed(lambda: f.create_dataset("x", data=frames, chunks=(64, 64, 64, 3), compression="lzf"))
        f.flush()
        d = timed(lambda: f["x"][:])
        ratio = raw / f["x"].id.get_storage_size()
    print(f"{'lzf':<10}{ratio:>8.2f}{len(frames) / c:>15,.0f}{len(frames) / d:>16,.0f}")


def write_rates(frames: np.ndarray, tmp: Path) -> tuple[float, float]:
    """Frames/s of HDF5's own filter pipeline and of wm's threaded writer, episodes of 1000 frames."""

    def hdf5() -> None:
        with h5py.File(tmp / "a.h5", "w") as f:
            ds = f.create_dataset(
                "frames",
                (0, 64, 64, 3),
                np.uint8,
                maxshape=(None, 64, 64, 3),
                chunks=(64, 64, 64, 3),
                compression="gzip",
                compression_opts=4,
            )
            for i in range(0, len(frames), 1000):
                n = ds.shape[0]
                ds.resize(n + len(frames[i : i + 1000]), axis=0)
                ds[n:] = frames[i : i + 1000]

    def wm() -> None:
        with write_rollouts(tmp / "b.h5", {}) as w:
            for i in range(0, len(frames), 1000):
                T = len(frames[i : i + 1000]) - 1
                z = np.zeros(T, np.float32)
                w.append(Episode(np.zeros((T, 3), np.float32), z, z > 0, z > 0, i, frames[i : i + T + 1]))

    return len(frames) / timed(hdf5), len(frames) / timed(wm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", type=Path, default=Path("data/rollouts.h5"), help="a rollouts.h5 to read frames from")
    parser.add_argument("--frames", type=int, default=40_000, help="frames to measure on")
    add_devices_option(parser)
    args = parser.parse_args()
    with h5py.File(args.path, "r") as f:
        frames = f["frames"][: args.frames]
    n = len(frames)
    print(f"{n} frames of {args.path}, {available_cores()} cores, torch {torch.__version__}\n")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        codec_table(frames, tmp)
        hdf5_w, wm_w = write_rates(frames, tmp)
        with h5py.File(tmp / "b.h5", "r") as f:
            ds = f["frames"]
            hdf5_r = n / timed(lambda: ds[:])
            wm_r = n / timed(lambda: read_frame_range(ds, 0, n))
            idx = np.arange(n)
            loaders = {
                "streamed": FrameLoader(ds, idx, 256, torch.device("cpu"), 0, block=4096, buffer_blocks=4),
                "in memory": FrameLoader(ds, idx, 256, torch.device("cpu"), float("inf")),
            }
            rates = {
                k: n / timed(lambda lo=lo: [b.shape for b in lo.epoch(torch.Generator().manual_seed(0))])
                for k, lo in loaders.items()
            }
    print(f"\n{'writing frames':<40}{'frames/s':>12}")
    print(f"{'  HDF5 gzip 4 filter (one chunk at a time)':<40}{hdf5_w:>12,.0f}")
    print(f"{'  wm writer (chunks on threads)':<40}{wm_w:>12,.0f}")
    print(f"{'reading frames':<40}{'frames/s':>12}")
    print(f"{'  h5py slicing':<40}{hdf5_r:>12,.0f}")
    print(f"{'  read_frame_range (chunks on threads)':<40}{wm_r:>12,.0f}")
    for k, rate in rates.items():
        print(f"{'  FrameLoader, ' + k:<40}{rate:>12,.0f}")
    cfg = WorldModelAgentConfig()
    print(f"{'VAE training (forward, backward, step)':<40}{'img/s':>12}")
    for device in devices(args):
        batch = cfg.vae.batch_size if device.type == "cpu" else 1024
        x = torch.from_numpy(frames[:batch]).to(device)
        rate = training_rate(FSQVAE(cfg.fsq_vae).to(device), x, batch, 5, 2, device)
        print(f"{f'  {device.type}, batch {batch}':<40}{rate:>12,.0f}")


if __name__ == "__main__":
    main()
