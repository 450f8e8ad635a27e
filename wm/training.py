"""The one training loop: epochs of `model.compute_loss(batch) -> (loss, metrics)`, resumable checkpoints.

Checkpoints (written atomically at the end of every epoch) hold the weights, the optimizer, the epoch,
the RNG states, the metric history and a *fingerprint* of the params that determine the run. DVC keeps
`persist: true` checkpoints across `dvc exp run -S ...`, so a checkpoint whose fingerprint differs from
the current params is never resumed: we say so and start fresh. `epochs` is left out of the fingerprint
and the learning rate is constant, so raising `epochs` continues a finished run exactly as if it had been
asked for from the start. The data order of epoch k is drawn from a generator seeded with (seed, k), so
a run killed mid-way and resumed ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import io
import json
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from wm.utils import WmError, atomic_path, raise_if_interrupted, write_csv, write_json

Metrics = dict[str, float]


@dataclass(frozen=True)
class TrainSpec:
    component: str  # metric prefix: "vae" or "wm"
    epochs: int
    lr: float
    weight_decay: float
    grad_clip: float | None
    checkpoint: Path
    fingerprint: dict  # JSON-able params that determine the run (without `epochs`)
    select: str  # validation metric (lower is better) that picks the weights the next stages use
    train_metrics: tuple[str, ...] | None = None  # compute_loss metrics to log for the train split (None: all)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The RNG of one epoch's data order: a pure function of (seed, epoch), so resuming is exact."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _rng_states() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])  # noqa: NPY002
    random.setstate(states["python"])
    if torch.cuda.is_available() and states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, **payload) -> None:
    # Through a buffer: torch.save names the zip archive after the file, and the temporary name
    # carries the pid, so equal checkpoints would otherwise differ in bytes (and in DVC's hash).
    buf = io.BytesIO()
    torch.save(payload, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def fingerprint_changes(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two fingerprints (compared as JSON)."""

    def diff(a: object, b: object, prefix: str) -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [x for k in sorted(set(a) | set(b)) for x in diff(a.get(k), b.get(k), f"{prefix}{k}.")]
        return [] if a == b else [prefix.rstrip(".")]

    return diff(json.loads(json.dumps(old)), json.loads(json.dumps(new)), "")


def resumable_checkpoint(
    path: Path, fingerprint: dict, component: str, unit: str, limit: int, device: torch.device | str = "cpu"
) -> dict | None:
    """The checkpoint at `path` to resume from, or None: absent, unreadable, written under other params,
    or further along (`ckpt[unit]` epochs or generations) than the `limit` asked for now."""
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
        changed = fingerprint_changes(ckpt["fingerprint"], fingerprint)
        done = int(ckpt[unit])
    except Exception as err:  # any unreadable checkpoint is as good as none: say so and retrain
        print(f"{component}: {path} is unreadable ({type(err).__name__}); starting fresh")
        return None
    if changed:
        print(f"{component}: {path} was trained under other params ({', '.join(changed)}); starting fresh")
        return None
    if done > limit:
        print(f"{component}: {path} has {done} {unit}s, more than the {limit} asked; starting fresh")
        return None
    if done:
        print(f"{component}: resuming from {path} at {unit} {done}/{limit}")
    return ckpt


def _mean(rows: list[tuple[Metrics, int]]) -> Metrics:
    total = sum(n for _, n in rows)
    return {k: sum(m[k] * n for m, n in rows) / total for k in rows[0][0]} if rows else {}


def train(
    model: nn.Module,
    spec: TrainSpec,
    train_batches: Callable[[int], Iterable],
    evaluate: Callable[[nn.Module], Metrics],
    device: torch.device,
    on_epoch: Callable[[nn.Module, list[dict]], None] | None = None,
    batches_per_epoch: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train `model` for `spec.epochs` epochs (resuming if possible); return the metric history.

    `train_batches(epoch)` yields batches for `model.compute_loss`; `evaluate(model)` returns
    validation metrics (unprefixed); `on_epoch(model, history)` writes per-epoch artefacts.
    History rows: {"epoch": k, "<component>/train/<name>": ..., "<component>/val/<name>": ...}.
    """
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    history: list[dict] = []
    start_epoch, best_model = 0, None
    ckpt = resumable_checkpoint(spec.checkpoint, spec.fingerprint, spec.component, "epoch", spec.epochs, device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        _set_rng_states(ckpt["rng"])
        history, start_epoch, best_model = ckpt["history"], ckpt["epoch"], ckpt["best_model"]
    c = spec.component
    for epoch in range(start_epoch, spec.epochs):
        model.train()
        t0, rows, n_items = time.perf_counter(), [], 0
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
            n = _batch_size(batch)
            rows.append((metrics, n))
            n_items += n
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        if not math.isfinite(_mean(rows).get("loss", 0.0)):
            raise FloatingPointError(f"{c}: training loss is not finite at epoch {epoch + 1}; lower the lr")
        model.eval()
        with torch.no_grad():
            val = evaluate(model)
        # Early stopping without stopping: the next stages get the weights of the epoch with the best
        # validation `select` metric (on small data the world model overfits within a few epochs).
        best_epoch = history[-1]["best_epoch"] if history else 0
        if not history or val[spec.select] < history[best_epoch - 1][f"{c}/val/{spec.select}"]:
            best_epoch, best_model = epoch + 1, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        train_means = _mean(rows)
        row = {"epoch": epoch + 1, "best_epoch": best_epoch}
        row |= {f"{c}/train/{k}": v for k, v in train_means.items() if k in (spec.train_metrics or train_means)}
        row |= {f"{c}/val/{k}": v for k, v in val.items()}
        history.append(row)
        save_checkpoint(
            spec.checkpoint,
            model=model.state_dict(),
            best_model=best_model,
            optimizer=opt.state_dict(),
            epoch=epoch + 1,
            history=history,
            rng=_rng_states(),
            fingerprint=spec.fingerprint,
        )
        if on_epoch is not None:
            on_epoch(model, history)
        rate = n_items / (time.perf_counter() - t0)
        shown = "  ".join(f"{k.split('/', 1)[1]} {v:.4g}" for k, v in row.items() if "/" in k)
        print(
            f"{c} epoch {epoch + 1}/{spec.epochs}  {shown}  best epoch {best_epoch}  ({rate:,.0f} items/s)", flush=True
        )
    if on_epoch is not None and start_epoch == spec.epochs:
        on_epoch(model, history)  # a finished checkpoint: rewrite the artefacts from its history
    return history


def _batch_size(batch) -> int:
    first = next(iter(batch.values())) if isinstance(batch, dict) else batch
    return int(first.shape[0])


def write_history(history: list[dict], metrics_path: Path, plots_path: Path) -> None:
    """The selected row (`best_epoch`, else the latest) -> metrics JSON (for `dvc metrics`), all rows ->
    CSV (for `dvc plots`).

    Both are rebuilt from the checkpoint's history, so a resumed run writes the same bytes as an
    uninterrupted one.
    """
    last = history[-1]
    selected = last
    if "best_epoch" in last:  # epoch histories; CMA-ES histories report their last generation
        selected = history[last["best_epoch"] - 1] | {"epochs": last["epoch"]}
    write_json(metrics_path, selected)
    write_csv(plots_path, history)


def load_trained(path: Path, fingerprint: dict, producer: str, device: torch.device | str = "cpu") -> dict:
    """An upstream checkpoint (all of it), refusing one trained under other params."""
    if not path.is_file():
        raise WmError(f"{path}: missing input (run `dvc repro {producer}` first)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
        changed = fingerprint_changes(ckpt["fingerprint"], fingerprint)
    except Exception as err:  # unreadable for any reason: the fix is the same
        raise WmError(f"{path}: unreadable checkpoint ({type(err).__name__}); run `dvc repro {producer}`") from None
    if changed:
        raise WmError(f"{path} was trained under other params ({', '.join(changed)}); run `dvc repro {producer}`")
    return ckpt
