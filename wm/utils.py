"""Small shared helpers: user-facing errors, seeds, devices and atomic file writes."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import multiprocessing as mp
import os
import random
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from enum import IntEnum
from pathlib import Path

import numpy as np
import torch


class WmError(Exception):
    """A problem the user can fix (missing input, corrupt file, ...): printed as one line, exit 2."""


class Stream(IntEnum):
    """Disjoint seed streams, so evaluation tracks never repeat collected or training tracks."""

    COLLECT = 0
    CTRL = 1
    EVAL = 2
    BASELINE = 3


def track_seed(master: int, stream: Stream, index: int) -> int:
    """Env seed of episode `index` of a stream: distinct for every (master, stream, index).

    Bit layout: stream << 52 | master << 20 | index (index < 2**20, master < 2**31).
    """
    assert 0 <= index < 2**20 and 0 <= master < 2**31, (master, index)
    return (int(stream) << 52) | (master << 20) | index


def episode_rng(master: int, stream: Stream, index: int) -> np.random.Generator:
    """The policy's RNG for one episode: depends only on (master, stream, index), not on the worker."""
    return np.random.default_rng([master, int(stream), index])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds legacy global users (libraries)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise WmError("device: cuda requested but torch sees no GPU (set device: auto or cpu in params.yaml)")
    return torch.device(name)


_interrupted = False


def _on_sigint(signum: int, frame: object) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def install_sticky_interrupt() -> None:
    """Make Ctrl-C stick. Python drops a KeyboardInterrupt raised inside a weakref callback or a `__del__`
    (it prints "Exception ignored in ..." and carries on), and a stage would then run on and write its
    outputs. The flag set here is honoured by `raise_if_interrupted` at the next work item and by
    `atomic_path` before any commit; the dropped exception is not printed, the stage's one line follows."""
    signal.signal(signal.SIGINT, _on_sigint)
    default_hook = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            default_hook(unraisable)

    sys.unraisablehook = hook


def raise_if_interrupted() -> None:
    """A safe point in long work (per batch, per episode): raise a Ctrl-C that Python swallowed."""
    if _interrupted:
        raise KeyboardInterrupt


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    An interrupted writer leaves at most a `*.tmp` file, never a file that looks finished.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        raise_if_interrupted()  # never commit work that a (swallowed) Ctrl-C interrupted
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Rows of one schema -> CSV, floats to 6 significant digits (plots need no more; diffs stay small)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def write_json(path: str | Path, data: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


class WorkerPool:
    """`map(fn, items)` over `workers` processes, results in input order; in-process when workers == 1.

    concurrent.futures rather than multiprocessing.Pool: a worker that dies (or whose initializer
    raises) surfaces as BrokenProcessPool instead of a Pool that silently respawns workers and hangs.
    spawn, not fork: workers must not inherit torch's thread pools or the parent's open HDF5 handles.
    The pool lives as long as the `with` block, so per-worker set-up (envs, models) is paid once.
    """

    def __init__(self, workers: int, initializer: Callable, initargs: tuple):
        self.pool = None
        if workers == 1:
            initializer(*initargs)
        else:
            self.pool = ProcessPoolExecutor(workers, mp.get_context("spawn"), initializer, initargs)

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        results = map(fn, items) if self.pool is None else self.pool.map(fn, items)
        for result in results:
            raise_if_interrupted()
            yield result

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:  # on an early exit (error, Ctrl-C) drop queued work instead of finishing it
            self.pool.shutdown(wait=True, cancel_futures=True)
