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

import collections
import contextlib
import functools
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import h5py
import numpy as np

from wm.errors import WmError
from wm.files import atomic_path
from wm.runtime import available_cores

if TYPE_CHECKING:
    from wm.episodes import Episode

T = TypeVar("T")
FORMAT_VERSION = 1
STEP_KEYS = ("actions", "rewards", "terminated", "truncated")
_STEP_DTYPES = {"actions": np.float32, "rewards": np.float32, "terminated": bool, "truncated": bool}
# 64 frames = 768 KiB per chunk: it fits h5py's default 1 MiB chunk cache, so reading a frame range
# decompresses each chunk once.
_FRAME_CHUNK = 64
# gzip level 4, measured on 40k CarRacing frames (benchmarks/bench_data.py, README "Benchmarks"): ratio
# 10.4 against 8.3 at level 1, compressing 8.0k frames/s per core against 15.8k; level 4 decompresses at
# ~22k frames/s per core. Spread over threads, level 4 keeps up with collection, so it buys the smaller file.
_GZIP_LEVEL = 4


@functools.cache
def _codec_pool() -> ThreadPoolExecutor:
    """Threads that (de)compress frame chunks: zlib releases the GIL, so chunks are coded in parallel where
    HDF5's own filter pipeline codes one chunk at a time, in the calling thread."""
    return ThreadPoolExecutor(available_cores(), thread_name_prefix="wm-zlib")


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
        compression_opts=_GZIP_LEVEL,
    )


class _ChunkWriter:
    """Appends rows to a chunked gzip dataset, compressing whole chunks on the codec threads and writing them
    in order with `write_direct_chunk`. Each chunk is byte-for-byte what HDF5's deflate filter writes
    (zlib at the same level; the last, partial chunk zero-padded like HDF5's fill value: tested), so the file
    reads with any HDF5 reader; only the compression runs in parallel (collection was bound by one core
    compressing: 5.9k steps/s with 16 workers on a 16-core machine)."""

    def __init__(self, ds: h5py.Dataset):
        self.ds, self.rows = ds, ds.chunks[0]
        self.pending: list[np.ndarray] = []  # rows not yet in a full chunk
        self.n_pending = 0
        self.written = 0  # rows in chunks handed to the codec threads
        self.inflight: collections.deque[tuple[int, Future]] = collections.deque()

    def append(self, rows: np.ndarray) -> None:
        self.ds.resize(self.ds.shape[0] + len(rows), axis=0)
        self.pending.append(rows)
        self.n_pending += len(rows)
        if self.n_pending >= self.rows:
            buf = np.concatenate(self.pending)
            cut = len(buf) - len(buf) % self.rows
            for i in range(0, cut, self.rows):
                self._submit(buf[i : i + self.rows])
            self.pending, self.n_pending = [buf[cut:]], len(buf) - cut
        while self.inflight and (self.inflight[0][1].done() or len(self.inflight) > 4 * available_cores()):
            self._write_first()

    def close(self) -> None:
        if self.n_pending:
            last = np.zeros((self.rows, *self.ds.shape[1:]), self.ds.dtype)  # HDF5 pads an edge chunk with fill 0
            last[: self.n_pending] = np.concatenate(self.pending)
            self._submit(last)
        while self.inflight:
            self._write_first()

    def _submit(self, chunk: np.ndarray) -> None:
        data = np.ascontiguousarray(chunk).tobytes()
        self.inflight.append((self.written, _codec_pool().submit(zlib.compress, data, _GZIP_LEVEL)))
        self.written += self.rows

    def _write_first(self) -> None:
        start, future = self.inflight.popleft()
        self.ds.id.write_direct_chunk((start, *(0,) * (self.ds.ndim - 1)), future.result())


class RolloutWriter:
    """Append episodes in order; the file appears at `path` only when `close()` succeeds."""

    def __init__(self, f: h5py.File):
        self.f = f
        self.frames = _ChunkWriter(_resizable(f, "frames", (64, 64, 3), np.uint8, _FRAME_CHUNK))
        self.steps = {
            "actions": _resizable(f, "actions", (3,), np.float32, 4096),
            **{k: _resizable(f, k, (), _STEP_DTYPES[k], 4096) for k in STEP_KEYS[1:]},
        }
        self.step_offsets = [0]
        self.track_seeds: list[int] = []

    def append(self, ep: Episode) -> None:
        assert ep.frames is not None and len(ep.frames) == ep.steps + 1, "an episode is stored with all T+1 frames"
        self.frames.append(ep.frames)
        for key, ds in self.steps.items():
            _append(ds, getattr(ep, key).astype(_STEP_DTYPES[key]))
        self.step_offsets.append(self.step_offsets[-1] + len(ep.actions))
        self.track_seeds.append(ep.track_seed)

    def finish(self) -> None:
        self.frames.close()
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


def _gzip_chunks_along_rows(ds: h5py.Dataset) -> bool:
    """Whether `ds` is stored as this module writes frames: gzip alone, chunks of whole rows."""
    if ds.chunks is None or ds.chunks[1:] != ds.shape[1:]:
        return False
    plist = ds.id.get_create_plist()
    return plist.get_nfilters() == 1 and plist.get_filter(0)[0] == h5py.h5z.FILTER_DEFLATE


def read_frame_range(frames: h5py.Dataset, start: int, stop: int) -> np.ndarray:
    """frames[start:stop], decompressing its chunks on the codec threads (HDF5 decompresses one chunk at a
    time: 13.0k frames/s against 29.2k on 2 cores, benchmarks/bench_data.py). Other layouts read through h5py."""
    if stop <= start or not _gzip_chunks_along_rows(frames):
        return frames[start:stop]
    rows, row_shape = frames.chunks[0], frames.shape[1:]
    tail = (0,) * len(row_shape)

    def chunk(c: int) -> np.ndarray:
        _, data = frames.id.read_direct_chunk((c * rows, *tail))
        return np.frombuffer(zlib.decompress(data), frames.dtype).reshape(rows, *row_shape)

    first, last = start // rows, (stop - 1) // rows
    out = np.concatenate(list(_codec_pool().map(chunk, range(first, last + 1))))  # (n_chunks * rows, ...)
    return out[start - first * rows : stop - first * rows]


def prefetched(loads: Iterable[Callable[[], T]]) -> Iterator[T]:
    """The results of `loads` in order, each load run in a background thread while the caller works on the
    previous result (disk reads and decompression overlap training or encoding)."""
    with ThreadPoolExecutor(1, thread_name_prefix="wm-prefetch") as ex:
        ahead: Future | None = None
        for load in loads:
            current, ahead = ahead, ex.submit(load)
            if current is not None:
                yield current.result()
        if ahead is not None:
            yield ahead.result()


def read_frames(frames: h5py.Dataset, indices: np.ndarray) -> np.ndarray:
    """Frames at sorted `indices`, read as contiguous runs (h5py fancy indexing is slow)."""
    if len(indices) == 0:
        return np.zeros((0, *frames.shape[1:]), np.uint8)
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    runs = zip(np.r_[0, breaks], np.r_[breaks, len(indices)], strict=True)
    return np.concatenate([read_frame_range(frames, indices[a], indices[b - 1] + 1) for a, b in runs])
