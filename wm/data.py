"""The one module that knows the HDF5 layouts of data/rollouts.h5 and data/tokens.h5.

Layout (E episodes; episode e has T_e steps and T_e + 1 frames, the last being the observation after
the last action, so every transition (frame_t, action_t) -> frame_{t+1} is complete):

    frames       (sum T_e + E, 64, 64, 3) uint8   rollouts.h5 only
    tokens       (sum T_e + E,) int64             tokens.h5 only: FSQ index of each frame
    codes        (sum T_e + E, D) float32         tokens.h5 only: FSQ code of each frame
    actions      (sum T_e, 3) float32             action_t taken at frame_t
    rewards      (sum T_e,) float32               reward of action_t
    terminated   (sum T_e,) bool                  the env ended the episode at step t
    truncated    (sum T_e,) bool                  the time limit ended it
    step_offsets (E + 1,) int64                   steps of episode e: [step_offsets[e], step_offsets[e+1])
    track_seeds  (E,) uint64                      env seed of each episode

Frames of episode e are [step_offsets[e] + e, step_offsets[e+1] + e + 1). Files are written to a
temporary name and renamed when complete (wm.utils.atomic_path).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from wm.utils import WmError, atomic_path

FORMAT_VERSION = 1
STEP_KEYS = ("actions", "rewards", "terminated", "truncated")
_STEP_DTYPES = {"actions": np.float32, "rewards": np.float32, "terminated": bool, "truncated": bool}
# 64 frames = 768 KiB per chunk: it fits h5py's default 1 MiB chunk cache, so reading a frame range
# decompresses each chunk once.
_FRAME_CHUNK = 64


@dataclass
class Episode:
    """One recorded episode (T steps)."""

    frames: np.ndarray  # (T+1, 64, 64, 3) uint8
    actions: np.ndarray  # (T, 3) float32
    rewards: np.ndarray  # (T,) float32
    terminated: np.ndarray  # (T,) bool
    truncated: np.ndarray  # (T,) bool
    track_seed: int

    def __post_init__(self) -> None:
        T = len(self.actions)
        assert self.frames.shape[0] == T + 1 and self.frames.dtype == np.uint8, self.frames.shape
        assert all(len(getattr(self, k)) == T for k in STEP_KEYS)


def frame_offsets(step_offsets: np.ndarray) -> np.ndarray:
    """(E+1,) frame offsets from step offsets: each episode has one more frame than steps."""
    return step_offsets + np.arange(len(step_offsets))


def _resizable(f: h5py.File, name: str, shape: tuple[int, ...], dtype, chunk_rows: int) -> h5py.Dataset:
    return f.create_dataset(
        name,
        shape=(0, *shape),
        maxshape=(None, *shape),
        dtype=dtype,
        chunks=(chunk_rows, *shape),
        compression="gzip",
        compression_opts=4,
    )


class RolloutWriter:
    """Append episodes in order; the file appears at `path` only when `close()` succeeds."""

    def __init__(self, f: h5py.File):
        self.f = f
        self.frames = _resizable(f, "frames", (64, 64, 3), np.uint8, _FRAME_CHUNK)
        self.steps = {
            "actions": _resizable(f, "actions", (3,), np.float32, 4096),
            **{k: _resizable(f, k, (), _STEP_DTYPES[k], 4096) for k in STEP_KEYS[1:]},
        }
        self.step_offsets = [0]
        self.track_seeds: list[int] = []

    def append(self, ep: Episode) -> None:
        _append(self.frames, ep.frames)
        for key, ds in self.steps.items():
            _append(ds, getattr(ep, key).astype(_STEP_DTYPES[key]))
        self.step_offsets.append(self.step_offsets[-1] + len(ep.actions))
        self.track_seeds.append(ep.track_seed)

    def finish(self) -> None:
        self.f.create_dataset("step_offsets", data=np.asarray(self.step_offsets, dtype=np.int64))
        self.f.create_dataset("track_seeds", data=np.asarray(self.track_seeds, dtype=np.uint64))


def _append(ds: h5py.Dataset, rows: np.ndarray) -> None:
    n = ds.shape[0]
    ds.resize(n + len(rows), axis=0)
    ds[n:] = rows


@contextlib.contextmanager
def _create_h5(path: str | Path, attrs: dict) -> Iterator[h5py.File]:
    """A new HDF5 file at a temporary name, renamed onto `path` when the block succeeds."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver=("earliest", "v110")) as f:
        for key, value in attrs.items():
            f.attrs[key] = value if isinstance(value, str | int | float) else json.dumps(value, sort_keys=True)
        f.attrs["format_version"] = FORMAT_VERSION
        yield f


@contextlib.contextmanager
def write_rollouts(path: str | Path, attrs: dict) -> Iterator[RolloutWriter]:
    """Context manager: `with write_rollouts(p, attrs) as w: w.append(ep)`; atomic on success."""
    with _create_h5(path, attrs) as f:
        writer = RolloutWriter(f)
        yield writer
        writer.finish()


def _open_h5(path: str | Path, producer: str) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise WmError(f"{path}: missing input (run `dvc repro {producer}` first)")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise WmError(f"{path}: not a readable HDF5 file ({err}); delete it and run `dvc repro {producer}`") from None


def _check(f: h5py.File, path: str | Path, producer: str, keys: tuple[str, ...], rows: dict[str, int]) -> None:
    fix = f"delete it and run `dvc repro {producer}`"
    missing = [k for k in keys if k not in f]
    if missing:
        raise WmError(f"{path}: incomplete file, missing datasets {missing}; {fix}")
    if f.attrs.get("format_version") != FORMAT_VERSION:
        raise WmError(f"{path}: format version {f.attrs.get('format_version')} != {FORMAT_VERSION}; {fix}")
    for key, n in rows.items():
        if f[key].shape[0] != n:
            raise WmError(f"{path}: dataset {key} has {f[key].shape[0]} rows, expected {n}; {fix}")


@dataclass
class StepData:
    """Per-step arrays and episode boundaries, loaded into memory (small next to the frames)."""

    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    step_offsets: np.ndarray
    track_seeds: np.ndarray

    @property
    def num_episodes(self) -> int:
        return len(self.step_offsets) - 1

    @property
    def frame_offsets(self) -> np.ndarray:
        return frame_offsets(self.step_offsets)

    @property
    def lengths(self) -> np.ndarray:
        """(E,) steps per episode."""
        return np.diff(self.step_offsets)


def _read_steps(f: h5py.File, path: str | Path, producer: str, extra: tuple[str, ...]) -> StepData:
    _check(f, path, producer, (*STEP_KEYS, "step_offsets", "track_seeds", *extra), {})
    offsets = f["step_offsets"][:]
    n_steps, n_frames = int(offsets[-1]), int(offsets[-1]) + len(offsets) - 1
    rows = {k: n_steps for k in STEP_KEYS} | {k: n_frames for k in extra} | {"track_seeds": len(offsets) - 1}
    _check(f, path, producer, (), rows)
    return StepData(**{k: f[k][:] for k in STEP_KEYS}, step_offsets=offsets, track_seeds=f["track_seeds"][:])


class Rollouts:
    """Read access to data/rollouts.h5; frames stay on disk (`frames` is the h5py dataset)."""

    def __init__(self, path: str | Path = "data/rollouts.h5"):
        self.path = Path(path)
        self.file = _open_h5(path, "collect")
        self.steps = _read_steps(self.file, path, "collect", ("frames",))
        self.frames: h5py.Dataset = self.file["frames"]
        self.attrs = dict(self.file.attrs)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Rollouts:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation split by episode (never by frame: neighbouring frames are
    near-duplicates, so a frame split would leak). At least one episode on each side."""
    if num_episodes < 2:
        raise WmError(f"need at least 2 episodes for a train/validation split, got {num_episodes}")
    n_val = min(max(1, round(num_episodes * val_fraction)), num_episodes - 1)
    perm = np.random.default_rng([seed, 7]).permutation(num_episodes)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def episode_frame_indices(step_offsets: np.ndarray, episodes: np.ndarray) -> np.ndarray:
    """Sorted frame indices of the given episodes."""
    fo = frame_offsets(step_offsets)
    return np.concatenate([np.arange(fo[e], fo[e + 1]) for e in episodes]) if len(episodes) else np.zeros(0, int)


@dataclass
class Tokens:
    """data/tokens.h5 loaded into memory: one token per frame, aligned with the per-step arrays."""

    tokens: np.ndarray  # (F,) int64
    codes: np.ndarray  # (F, D) float32
    steps: StepData
    levels: list[int]


def write_tokens(path: str | Path, tokens: np.ndarray, codes: np.ndarray, steps: StepData, attrs: dict) -> None:
    n_frames = int(steps.frame_offsets[-1])
    assert tokens.shape == (n_frames,) and codes.shape[0] == n_frames, (tokens.shape, codes.shape, n_frames)
    with _create_h5(path, attrs) as f:
        f.create_dataset("tokens", data=tokens.astype(np.int64), compression="gzip", compression_opts=4)
        f.create_dataset("codes", data=codes.astype(np.float32), compression="gzip", compression_opts=4)
        for key in (*STEP_KEYS, "step_offsets", "track_seeds"):
            f.create_dataset(key, data=getattr(steps, key))


def load_tokens(path: str | Path = "data/tokens.h5") -> Tokens:
    with _open_h5(path, "encode") as f:
        steps = _read_steps(f, path, "encode", ("tokens", "codes"))
        return Tokens(tokens=f["tokens"][:], codes=f["codes"][:], steps=steps, levels=json.loads(f.attrs["levels"]))


def read_frames(frames: h5py.Dataset, indices: np.ndarray) -> np.ndarray:
    """Frames at sorted `indices`, read as contiguous runs (h5py fancy indexing is slow)."""
    if len(indices) == 0:
        return np.zeros((0, *frames.shape[1:]), np.uint8)
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    runs = zip(np.r_[0, breaks], np.r_[breaks, len(indices)], strict=True)
    return np.concatenate([frames[indices[a] : indices[b - 1] + 1] for a, b in runs])


class FrameLoader:
    """Shuffled batches of uint8 frames (B, 64, 64, 3) for the VAE.

    Datasets up to `load_limit_bytes` are read once into memory, onto the training device (a million
    frames is 12 GB and fits on an H100); larger ones are streamed from HDF5: blocks of consecutive
    frames in a shuffled order, shuffled again inside a buffer of `buffer_blocks` blocks, so memory stays
    bounded. Either way the order is a pure function of the generator passed to `epoch`.
    """

    def __init__(
        self,
        frames: h5py.Dataset,
        indices: np.ndarray,
        batch_size: int,
        device: torch.device,
        load_limit_bytes: float,
        max_frames: int = 0,
        block: int = 4096,
        buffer_blocks: int = 4,
    ):
        self.frames, self.indices, self.batch_size, self.device = frames, indices, batch_size, device
        self.max_frames = max_frames or len(indices)
        self.block, self.buffer_blocks = block, buffer_blocks
        frame_bytes = int(np.prod(frames.shape[1:]))
        self.data = None
        if len(indices) * frame_bytes <= load_limit_bytes:
            self.data = torch.from_numpy(read_frames(frames, indices)).to(device)  # (N, H, W, C) uint8

    def __len__(self) -> int:
        return min(self.max_frames, len(self.indices))

    def epoch(self, gen: torch.Generator | None) -> Iterator[torch.Tensor]:
        """Shuffled batches (gen given) or all frames in file order (gen None, for validation)."""
        if gen is None:
            for i in range(0, len(self.indices), self.batch_size):
                chunk = self.indices[i : i + self.batch_size]
                yield self.data[i : i + len(chunk)] if self.data is not None else self._read(chunk)
            return
        if self.data is not None:
            order = torch.randperm(len(self.data), generator=gen)[: len(self)]
            for i in range(0, len(order), self.batch_size):
                yield self.data[order[i : i + self.batch_size].to(self.device)]
            return
        yield from self._stream(gen)

    def _read(self, indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(read_frames(self.frames, indices)).to(self.device)

    def _stream(self, gen: torch.Generator) -> Iterator[torch.Tensor]:
        B, left = self.batch_size, len(self)
        n_blocks = math.ceil(len(self.indices) / self.block)
        order = torch.randperm(n_blocks, generator=gen).tolist()
        carry = np.zeros((0, *self.frames.shape[1:]), np.uint8)
        for j in range(0, n_blocks, self.buffer_blocks):
            blocks = [self.indices[b * self.block : (b + 1) * self.block] for b in order[j : j + self.buffer_blocks]]
            buf = np.concatenate([carry, *(read_frames(self.frames, b) for b in blocks)])
            buf = buf[torch.randperm(len(buf), generator=gen).numpy()]
            cut = len(buf) - len(buf) % B
            for i in range(0, cut, B):
                yield torch.from_numpy(buf[i : i + min(B, left)]).to(self.device)  # (B, H, W, C) uint8
                left -= B
                if left <= 0:
                    return
            carry = buf[cut:]
        if len(carry):
            yield torch.from_numpy(carry[:left]).to(self.device)


class WindowLoader:
    """Batches of `seq_len`-step windows cut within episodes (never across a boundary).

    A window starting at step s of episode e holds tokens s..s+L (L+1 frames: inputs and next-token
    targets) and actions/rewards/dones of steps s..s+L-1. Each epoch tiles every episode with
    non-overlapping windows from a random phase, plus the window ending at the last step, so terminal
    transitions are always seen. Episodes shorter than L steps are skipped (counted in `skipped`).
    """

    def __init__(self, data: Tokens, episodes: np.ndarray, seq_len: int, batch_size: int, device: torch.device):
        steps = data.steps
        self.L, self.batch_size, self.device = seq_len, batch_size, device
        lengths = steps.lengths[episodes]
        self.episodes = episodes[lengths >= seq_len]
        self.skipped = int((lengths < seq_len).sum())
        self.lengths = torch.from_numpy(steps.lengths[self.episodes])
        self.step_off = torch.from_numpy(steps.step_offsets[self.episodes])
        self.frame_off = torch.from_numpy(steps.frame_offsets[self.episodes])
        self.tokens = torch.from_numpy(data.tokens).to(device)  # (F,)
        self.actions = torch.from_numpy(steps.actions).to(device)  # (S, 3)
        self.rewards = torch.from_numpy(steps.rewards).to(device)  # (S,)
        self.dones = torch.from_numpy(steps.terminated.astype(np.float32)).to(device)  # (S,)

    def starts(self, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(episode position, start step) of every window of one epoch; phase 0 when gen is None."""
        ep, st = [], []
        for i, T in enumerate(self.lengths.tolist()):
            phase = 0 if gen is None else int(torch.randint(self.L, (1,), generator=gen))
            s = torch.arange(min(phase, T - self.L), T - self.L + 1, self.L)
            s = torch.unique(torch.cat([s, torch.tensor([T - self.L])]))
            ep.append(torch.full_like(s, i))
            st.append(s)
        if not ep:  # every episode shorter than L
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        return torch.cat(ep), torch.cat(st)

    def gather(self, ep: torch.Tensor, st: torch.Tensor) -> dict[str, torch.Tensor]:
        ar = torch.arange(self.L + 1)
        f_idx = (self.frame_off[ep] + st)[:, None] + ar  # (B, L+1)
        s_idx = (self.step_off[ep] + st)[:, None] + ar[:-1]  # (B, L)
        f_idx, s_idx = f_idx.to(self.device), s_idx.to(self.device)
        return {
            "tokens": self.tokens[f_idx],  # (B, L+1)
            "actions": self.actions[s_idx],  # (B, L, 3)
            "rewards": self.rewards[s_idx],  # (B, L)
            "dones": self.dones[s_idx],  # (B, L)
        }

    def epoch(self, gen: torch.Generator | None) -> Iterator[dict[str, torch.Tensor]]:
        """Shuffled batches (gen given) or all windows in order (gen None, for validation)."""
        ep, st = self.starts(gen)
        order = torch.arange(len(ep)) if gen is None else torch.randperm(len(ep), generator=gen)
        for i in range(0, len(order), self.batch_size):
            j = order[i : i + self.batch_size]
            yield self.gather(ep[j], st[j])
