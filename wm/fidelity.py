"""Dream fidelity: does the world model rank controllers the way the real game does?

A dream is a usable fitness signal only if it orders controllers like the real game. So we score a fixed
panel of controllers (the trained one, perturbations of it at several scales, the zero controller and random
ones) on the same tracks in both: in the real game, and in the dream started from the encoded first frame of
each of those tracks. The Spearman rank correlation of the two mean returns over the panel is the fidelity
(1: the dream ranks like the game; 0: no signal; -1: backwards), and the trained controller's dream-minus-real
gap measures how far CMA-ES exploited the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wm.seeding import Stream, numpy_rng

# Perturbation scales of the trained controller in the panel (absolute, in parameter units; CMA-ES starts
# at sigma0 = 0.5), and the scale of the random controllers.
PERTURBATION_SCALES = (0.1, 0.3, 1.0)
RANDOM_SCALE = 0.5


def rank(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of a 1-d array, ties given the mean of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for v in np.unique(values):  # average the ranks of tied values
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson's on the ranks); 0 when either side is constant."""
    rx, ry = rank(x), rank(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else 0.0


@dataclass(frozen=True)
class Panel:
    names: list[str]  # "trained", "zero", "perturbed@0.3#1", "random#2", ...
    params: np.ndarray  # (N, P) float32, row 0 the trained controller


def controller_panel(trained: np.ndarray, size: int, seed: int) -> Panel:
    """`size` controllers: the trained one, the zero controller, then perturbations of the trained one at each
    of PERTURBATION_SCALES in turn, and random controllers (one in four of the rest); the same for a given
    (trained, size, seed)."""
    if size < 3:
        raise ValueError(f"a panel needs at least 3 controllers to rank, got {size}")
    rng = numpy_rng(seed, Stream.EVAL_DREAM, 1)
    names, rows = ["trained", "zero"], [trained, np.zeros_like(trained)]
    for i in range(size - 2):
        if i % 4 == 3:
            names.append(f"random#{i}")
            rows.append(RANDOM_SCALE * rng.standard_normal(trained.shape))
        else:
            scale = PERTURBATION_SCALES[i % 4 % len(PERTURBATION_SCALES)]
            names.append(f"perturbed@{scale}#{i}")
            rows.append(trained + scale * rng.standard_normal(trained.shape))
    return Panel(names, np.stack(rows).astype(np.float32))


def fidelity_metrics(dream: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Metrics of a panel: dream (N,) and real (N,) mean returns, row 0 the trained controller."""
    return {
        "rank_corr": spearman(dream, real),
        "gap_trained": float(dream[0] - real[0]),
        "real_trained": float(real[0]),
        "dream_trained": float(dream[0]),
        "real_spread": float(real.max() - real.min()),
    }
