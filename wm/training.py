"""The one training loop: epochs of `model.compute_loss(batch) -> (loss, metrics)`, resumable.

A resume checkpoint (weights, optimizer, epoch, RNG states, metric history, best weights; see
wm/checkpoints.py) is written at the end of every epoch. `epochs` is not part of its key and the learning
rate is constant, so raising `epochs` continues a finished run exactly as if it had been asked for from the
start. The data order of epoch k comes from its own seed stream (`epoch_generator`), so a run killed mid-way
and resumed ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from wm.checkpoints import ResumeCache
from wm.interrupt import raise_if_interrupted
from wm.metrics import MetricMeans
from wm.seeding import Stream, torch_generator


@dataclass(frozen=True)
class TrainSpec:
    component: str  # metric prefix: "vae" or "wm"
    epochs: int
    lr: float
    weight_decay: float
    grad_clip: float | None
    select: str  # validation metric (lower is better) that picks the weights the next stages use
    train_metrics: tuple[str, ...] | None = None  # compute_loss metrics to log for the train split (None: all)


@dataclass
class TrainResult:
    history: list[dict]  # one row per epoch: {"epoch", "best_epoch", "<component>/<split>/<name>": ...}
    best_model: dict[str, torch.Tensor]  # CPU state dict of the epoch with the best validation `select`
    best_epoch: int

    @property
    def selected(self) -> dict:
        """The metrics row of the weights the next stages use, with the number of epochs run."""
        return self.history[self.best_epoch - 1] | {"epochs": len(self.history)}


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The RNG of one epoch's data order: a pure function of (seed, epoch), so resuming is exact."""
    return torch_generator(seed, Stream.EPOCH, epoch)


def _rng_states() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_states(states: dict) -> None:
    # The checkpoint loads onto the training device, but RNG states are CPU ByteTensors wherever they came from.
    torch.set_rng_state(states["torch"].cpu())
    np.random.set_state(states["numpy"])  # noqa: NPY002
    random.setstate(states["python"])
    if torch.cuda.is_available() and states["cuda"]:
        torch.cuda.set_rng_state_all([state.cpu() for state in states["cuda"]])


def _batch_size(batch) -> int:
    first = next(iter(batch.values())) if isinstance(batch, dict) else batch
    return int(first.shape[0])


def train(
    model: nn.Module,
    spec: TrainSpec,
    cache: ResumeCache,
    train_batches: Callable[[int], Iterable],
    evaluate: Callable[[nn.Module], dict[str, float]],
    device: torch.device,
    on_epoch: Callable[[nn.Module, TrainResult], None] | None = None,
    batches_per_epoch: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train `model` for `spec.epochs` epochs, resuming from `cache` when it holds this run.

    `train_batches(epoch)` yields batches for `model.compute_loss`; `evaluate(model)` returns validation
    metrics (unprefixed); `on_epoch(model, result)` writes per-epoch artefacts (also once for a run that
    was already finished, so they are rebuilt from its history).
    """
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    result = TrainResult([], {}, 0)
    ckpt = cache.load("epoch", spec.epochs, device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        _set_rng_states(ckpt["rng"])
        result = TrainResult(ckpt["history"], ckpt["best_model"], ckpt["best_epoch"])
    c = spec.component
    start_epoch = len(result.history)
    for epoch in range(start_epoch, spec.epochs):
        model.train()
        t0, means = time.perf_counter(), MetricMeans()
        bar = tqdm(
            train_batches(epoch),
            desc=f"{c} epoch {epoch + 1}/{spec.epochs}",
            total=batches_per_epoch,
            disable=not progress,
            leave=False,
            mininterval=2.0,
        )
        for batch in bar:
            raise_if_interrupted()
            loss, metrics = model.compute_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if spec.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            opt.step()
            means.add(metrics, _batch_size(batch))
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        train_means = means.result()
        if not math.isfinite(train_means.get("loss", 0.0)):
            raise FloatingPointError(f"{c}: training loss is not finite at epoch {epoch + 1}; lower the lr")
        model.eval()
        with torch.no_grad():
            val = evaluate(model)
        # Early stopping without stopping: the next stages get the weights of the epoch with the best
        # validation `select` metric (on small data the world model overfits within a few epochs).
        if not result.history or val[spec.select] < result.selected[f"{c}/val/{spec.select}"]:
            result.best_epoch = epoch + 1
            result.best_model = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        row = {"epoch": epoch + 1, "best_epoch": result.best_epoch}
        row |= {f"{c}/train/{k}": v for k, v in train_means.items() if k in (spec.train_metrics or train_means)}
        row |= {f"{c}/val/{k}": v for k, v in val.items()}
        result.history.append(row)
        cache.save(
            model=model.state_dict(),
            optimizer=opt.state_dict(),
            epoch=epoch + 1,
            history=result.history,
            best_model=result.best_model,
            best_epoch=result.best_epoch,
            rng=_rng_states(),
        )
        if on_epoch is not None:
            on_epoch(model, result)
        rate = means.items / (time.perf_counter() - t0)
        shown = "  ".join(f"{k.split('/', 1)[1]} {v:.4g}" for k, v in row.items() if "/" in k)
        print(
            f"{c} epoch {epoch + 1}/{spec.epochs}  {shown}  best epoch {result.best_epoch}  ({rate:,.0f} items/s)",
            flush=True,
        )
    if on_epoch is not None and start_epoch == spec.epochs:
        on_epoch(model, result)  # a finished checkpoint: rebuild the artefacts from its history
    return result
