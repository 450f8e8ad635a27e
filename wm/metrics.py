"""Aggregating per-batch metrics into per-epoch ones, without guessing from names.

A model's ``compute_loss(batch) -> (loss, metrics)`` returns batch means as plain floats and counts as
:class:`Count`; :class:`MetricMeans` averages the first (weighted by batch size) and sums the second.
Metric names in histories and metrics files are ``component/split/name`` (e.g. ``wm/val/acc``).
"""

from __future__ import annotations

from pathlib import Path

from wm.files import write_csv, write_json


class Count(float):
    """A metric that adds up over batches (a count of events), rather than a batch mean."""


class MetricMeans:
    """Running aggregate of batch metrics: batch-size-weighted means of floats, sums of Counts."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}
        self.items = 0

    def add(self, metrics: dict[str, float], batch_size: int) -> None:
        for k, v in metrics.items():
            target, weight = (self.counts, 1) if isinstance(v, Count) else (self.sums, batch_size)
            target[k] = target.get(k, 0.0) + float(v) * weight
        self.items += batch_size

    def result(self) -> dict[str, float]:
        means = {k: v / self.items for k, v in self.sums.items()} if self.items else {}
        return means | self.counts


def write_history(metrics_path: Path | None, plots_path: Path | None, history: list[dict], selected: dict) -> None:
    """`selected` (the row the next stages use) -> metrics JSON for `dvc metrics`; every row -> CSV for
    `dvc plots` (each skipped when its path is None). Both are rebuilt from a checkpoint's history, so a
    resumed run writes the same bytes."""
    if metrics_path is not None:
        write_json(metrics_path, selected)
    if plots_path is not None:
        write_csv(plots_path, history)
