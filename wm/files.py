"""Atomic file writes: an output appears under its name only once it is complete."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

from wm.interrupt import raise_if_interrupted

# Metrics are written with 12 significant digits: enough for any comparison a user makes, and it keeps
# dvc.lock stable where a value's last bits depend on the CPU's BLAS kernels (CMA-ES's step size differed in
# the 16th digit between two machines of the same kind while every model file was byte-identical).
METRIC_DIGITS = 12


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    An interrupted writer leaves at most a hidden `.*.tmp.*` file, never a file that looks finished. The
    temporary name keeps the suffix, for writers that pick the format by it (imageio, ffmpeg).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        raise_if_interrupted()  # never commit work that a (swallowed) Ctrl-C interrupted
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _round_floats(value: object) -> object:
    if isinstance(value, float):
        return float(f"{value:.{METRIC_DIGITS}g}")
    if isinstance(value, dict):
        return {k: _round_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round_floats(v) for v in value]
    return value


def write_json(path: str | Path, data: object) -> None:
    """Metrics JSON for `dvc metrics`: sorted keys, floats to METRIC_DIGITS significant digits."""
    write_bytes(path, (json.dumps(_round_floats(data), indent=2, sort_keys=True) + "\n").encode())


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Rows of one schema -> CSV, floats to 6 significant digits (plots need no more; diffs stay small)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_bytes(path, buf.getvalue().encode())
