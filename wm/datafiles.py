"""The one module that knows the HDF5 layouts of data/rollouts.h5 and data/tokens.h5 (training batches are
cut from them in wm/batches.py).

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
temporary name and renamed when complete (wm.files.atomic_path).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from wm.errors import WmError
from wm.files import atomic_path

if TYPE_CHECKING:
    from wm.episodes import Episode

FORMAT_VERSION = 1
STEP_KEYS = ("actions", "rewards", "terminated", "truncated")
_STEP_DTYPES = {"actions": np.float32, "rewards": np.float32, "terminated": bool, "truncated": bool}
# 64 frames = 768 KiB per chunk: it fits h5py's default 1 MiB chunk cache, so reading a frame range
# decompresses each chunk once.
_FRAME_CHUNK = 64


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
        assert ep.frames is not None and len(ep.frames) == ep.steps + 1, "an episode is stored with all T+1 frames"
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


@dataclass
class Tokens:
    """data/tokens.h5 loaded into memory: one token per frame, aligned with the per-step arrays."""

    tokens: np.ndarray  # (F,) int64
    codes: np.ndarray  # (F, D) float32
    steps: StepData
    levels: list[int]


def steps_of(episodes: list[Episode]) -> StepData:
    """The per-step arrays of recorded episodes, concatenated in order."""
    lengths = [ep.steps for ep in episodes]
    return StepData(
        actions=np.concatenate([ep.actions for ep in episodes]).astype(np.float32),
        rewards=np.concatenate([ep.rewards for ep in episodes]).astype(np.float32),
        terminated=np.concatenate([ep.terminated for ep in episodes]),
        truncated=np.concatenate([ep.truncated for ep in episodes]),
        step_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        track_seeds=np.asarray([ep.track_seed for ep in episodes], dtype=np.uint64),
    )


def concat_tokens(parts: list[Tokens]) -> Tokens:
    """Several token datasets as one (episodes in order), e.g. the random data and every round's."""
    assert all(p.levels == parts[0].levels for p in parts), "token datasets of different FSQ levels"
    steps = [p.steps for p in parts]
    offsets = np.cumsum([0] + [s.step_offsets[-1] for s in steps[:-1]])  # first step of each part
    return Tokens(
        tokens=np.concatenate([p.tokens for p in parts]),
        codes=np.concatenate([p.codes for p in parts]),
        steps=StepData(
            **{k: np.concatenate([getattr(s, k) for s in steps]) for k in (*STEP_KEYS, "track_seeds")},
            step_offsets=np.concatenate([[0]] + [s.step_offsets[1:] + o for s, o in zip(steps, offsets, strict=True)]),
        ),
        levels=parts[0].levels,
    )


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
