"""wm.training, wm.checkpoints and wm.metrics on a toy model: the training loop's history, selection and
exact resume; resume caches keyed by params; weights-only published files; metric aggregation."""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from wm.checkpoints import KEEP_RESUME, ResumeCache, publish, read_published
from wm.config import parse_params, vae_fingerprint, wm_fingerprint
from wm.errors import WmError
from wm.metrics import Count, MetricMeans, write_history
from wm.seeding import Stream, torch_generator
from wm.training import TrainResult, TrainSpec, epoch_generator, train

CPU = torch.device("cpu")
TARGET = torch.tensor([1.0, -2.0])


class Toy(nn.Module):
    """Fits the mean of its batches; reports a mean, a count and a metric that is not logged for training."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))

    def compute_loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        loss = ((batch - self.w) ** 2).mean()
        return loss, {"loss": float(loss.detach()), "items": Count(len(batch)), "hidden": 1.0}


def toy_batches(epoch: int, seed: int = 0, sizes: tuple[int, ...] = (4, 4, 2)):
    g = epoch_generator(seed, epoch)
    for n in sizes:
        yield TARGET + torch.randn(n, 2, generator=g)


def distance(model: Toy) -> dict[str, float]:
    return {"dist": float((model.w - TARGET).norm()), "const": 0.5}


SPEC = TrainSpec("toy", epochs=4, lr=0.1, weight_decay=0.0, grad_clip=1.0, select="dist", train_metrics=None)


def cache(tmp_path: Path, lr: float = 0.1) -> ResumeCache:
    return ResumeCache(tmp_path / "cache", "toy", {"toy": {"lr": lr}})


def run(tmp_path: Path, epochs: int, **kw) -> tuple[Toy, TrainResult]:
    torch.manual_seed(0)
    model = Toy()
    spec = replace(SPEC, epochs=epochs)
    result = train(model, spec, kw.pop("cache", cache(tmp_path)), toy_batches, distance, CPU, progress=False, **kw)
    return model, result


def test_history_selection_and_metric_aggregation(tmp_path):
    scripted = iter([3.0, 1.0, 2.0, 1.0])  # best at epoch 2; a tie later does not replace it
    weights: list[torch.Tensor] = []

    def evaluate(model: Toy) -> dict[str, float]:
        assert not model.training  # evaluated in eval mode, without gradients
        assert not torch.is_grad_enabled()
        weights.append(model.w.detach().clone())
        return {"dist": next(scripted)}

    spec = replace(SPEC, train_metrics=("loss", "items"))
    torch.manual_seed(0)
    model = Toy()
    result = train(model, spec, cache(tmp_path), toy_batches, evaluate, CPU, progress=False)
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert [row["best_epoch"] for row in result.history] == [1, 2, 2, 2]
    assert result.best_epoch == 2 and torch.equal(result.best_model["w"], weights[1])
    assert not torch.equal(model.w.detach(), weights[1])  # `train` leaves the last weights in the model
    assert result.selected == result.history[1] | {"epochs": 4}
    row = result.history[0]
    assert set(row) == {"epoch", "best_epoch", "toy/train/loss", "toy/train/items", "toy/val/dist"}
    assert row["toy/train/items"] == 10  # counts add up over the batches...
    # ...means are weighted by batch size (the losses of the first epoch's three steps, recomputed)
    torch.manual_seed(0)
    replay, losses = Toy(), []
    opt = torch.optim.AdamW(replay.parameters(), lr=0.1, weight_decay=0.0)
    for batch in toy_batches(0):
        loss, metrics = replay.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(replay.parameters(), 1.0)
        opt.step()
        losses.append(metrics["loss"])
    assert row["toy/train/loss"] == pytest.approx((4 * losses[0] + 4 * losses[1] + 2 * losses[2]) / 10, rel=1e-12)


def test_training_fits_and_logs_every_train_metric_by_default(tmp_path):
    model, result = run(tmp_path, 4)
    assert {"toy/train/loss", "toy/train/items", "toy/train/hidden", "toy/val/dist", "toy/val/const"} <= set(
        result.history[0]
    )
    dists = [row["toy/val/dist"] for row in result.history]
    assert dists[-1] < dists[0] and result.best_epoch == 1 + dists.index(min(dists))


def test_more_epochs_resume_exactly(tmp_path, capsys):
    full_model, full = run(tmp_path / "full", 4)
    run(tmp_path / "part", 2)
    capsys.readouterr()
    part_model, part = run(tmp_path / "part", 4)
    out = capsys.readouterr().out
    assert f"toy: resuming from {cache(tmp_path / 'part').path} at epoch 2/4" in out
    assert torch.equal(part_model.w, full_model.w)
    assert part.history == full.history and part.best_epoch == full.best_epoch
    assert all(torch.equal(part.best_model[k], full.best_model[k]) for k in full.best_model)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (run where one is present)")
def test_resume_on_cuda(tmp_path):
    """A checkpoint loads onto the training device, RNG states included; torch only takes CPU ByteTensors
    back (resuming any CUDA run was a TypeError until they were moved back to the CPU)."""
    cuda = torch.device("cuda")

    def go(epochs: int) -> TrainResult:
        torch.manual_seed(0)
        return train(
            Toy(),
            replace(SPEC, epochs=epochs),
            cache(tmp_path),
            lambda epoch: (batch.to(cuda) for batch in toy_batches(epoch)),
            lambda model: {"dist": float((model.w.detach().cpu() - TARGET).norm())},
            cuda,
            progress=False,
        )

    go(2)
    assert len(go(4).history) == 4


def test_killed_mid_epoch_resumes_exactly(tmp_path):
    full_model, full = run(tmp_path / "full", 3)

    def dying(epoch: int):
        for i, batch in enumerate(toy_batches(epoch)):
            if epoch == 2 and i == 1:
                raise KeyboardInterrupt
            yield batch

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(Toy(), replace(SPEC, epochs=3), cache(tmp_path), dying, distance, CPU, progress=False)
    assert torch.load(cache(tmp_path).path, weights_only=False)["epoch"] == 2
    model, result = run(tmp_path, 3)
    assert torch.equal(model.w, full_model.w) and result.history == full.history


def test_finished_run_trains_nothing_and_rebuilds_artefacts(tmp_path):
    run(tmp_path, 3)
    calls = []

    def on_epoch(model: Toy, result: TrainResult) -> None:
        calls.append(len(result.history))

    def no_batches(epoch: int):
        raise AssertionError("a finished run must not train")

    torch.manual_seed(0)
    model = Toy()
    result = train(
        model,
        replace(SPEC, epochs=3),
        cache(tmp_path),
        no_batches,
        distance,
        CPU,
        on_epoch=on_epoch,
        progress=False,
    )
    assert calls == [3] and len(result.history) == 3


def test_checkpoint_further_along_is_not_resumed(tmp_path, capsys):
    _, short = run(tmp_path / "short", 2)
    run(tmp_path, 4)
    capsys.readouterr()
    _, again = run(tmp_path, 2)
    assert "has 4 epochs, more than the 2 asked; starting fresh" in capsys.readouterr().out
    assert again.history == short.history


def test_non_finite_loss_stops_training(tmp_path):
    def nan_batches(epoch: int):
        yield torch.full((2, 2), float("nan"))

    with pytest.raises(FloatingPointError, match="toy: training loss is not finite at epoch 1; lower the lr"):
        train(Toy(), SPEC, cache(tmp_path), nan_batches, distance, CPU, progress=False)
    assert not cache(tmp_path).path.exists()  # no checkpoint of a diverged epoch


def test_epoch_generator_is_a_pure_function_of_seed_and_epoch():
    def draw(g: torch.Generator) -> list[float]:
        return torch.rand(5, generator=g).tolist()

    assert draw(epoch_generator(3, 1)) == draw(epoch_generator(3, 1))
    assert draw(epoch_generator(3, 1)) == draw(torch_generator(3, Stream.EPOCH, 1))
    draws = {tuple(draw(epoch_generator(seed, epoch))) for seed in range(3) for epoch in range(3)}
    assert len(draws) == 9


# ---------------------------------------------------------------------------------------------- MetricMeans


def test_metric_means_weight_means_and_sum_counts():
    means = MetricMeans()
    assert means.result() == {}
    means.add({"loss": 1.0, "tp": Count(2)}, 3)
    means.add({"loss": 3.0, "tp": Count(5)}, 1)
    assert means.result() == {"loss": 1.5, "tp": 7.0} and means.items == 4


def test_write_history_csv_and_json(tmp_path):
    history = [
        {"epoch": 1, "best_epoch": 1, "vae/train/loss": 0.123456789, "vae/val/mse": 1e-7, "vae/val/usage": 0.5},
        {"epoch": 2, "best_epoch": 1, "vae/train/loss": 0.0987654321, "vae/val/mse": 12345678.9, "vae/val/usage": 1.0},
    ]
    metrics, plots = tmp_path / "m" / "vae.json", tmp_path / "p" / "history.csv"
    selected = history[0] | {"epochs": 2}
    write_history(metrics, plots, history, selected)
    assert json.loads(metrics.read_text()) == selected  # the selected row, 12 significant digits at most
    assert plots.read_text() == (
        "epoch,best_epoch,vae/train/loss,vae/val/mse,vae/val/usage\n"
        "1,1,0.123457,1e-07,0.5\n2,1,0.0987654,1.23457e+07,1\n"
    )
    rows = list(csv.DictReader(plots.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    # rewriting from a shorter history replaces the files (a fresh run), it does not append
    write_history(metrics, plots, history[:1], history[0] | {"epochs": 1})
    assert json.loads(metrics.read_text()) == history[0] | {"epochs": 1}
    assert len(plots.read_text().splitlines()) == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["history.csv", "m", "p", "vae.json"]  # no temp files


# --------------------------------------------------------------------------------------------- ResumeCache


def test_resume_key_drops_the_runs_own_length_only(tmp_path):
    def path(section: str, overrides: dict, device: str = "cpu", code: str = "wm.trainers.vae") -> Path:
        cfg = parse_params(overrides)
        fingerprint = (vae_fingerprint if section == "vae" else wm_fingerprint)(cfg)
        return ResumeCache.for_run(tmp_path, section, fingerprint, "epochs", device, code).path

    base = path("vae", {})
    assert base.parent == tmp_path / "vae" and base.suffix == ".pt"
    assert path("vae", {"vae": {"epochs": 9}}) == base  # a longer run continues this one
    assert path("vae", {"wm": {"epochs": 9}, "encode": {"batch_size": 3}}) == base  # not in its fingerprint
    for other in ({"vae": {"lr": 0.01}}, {"collect": {"episodes": 3}}, {"fsq": {"levels": [5, 5]}}):
        assert path("vae", other) != base, other
    assert path("vae", {}, device="cuda") != base  # CPU and CUDA runs differ in their last bits
    assert path("vae", {}, code="wm.trainers.world_model") != base  # another training code
    wm_base = path("wm", {}, code="wm.trainers.world_model")
    assert path("wm", {"wm": {"epochs": 99}}, code="wm.trainers.world_model") == wm_base
    assert path("wm", {"vae": {"epochs": 9}}, code="wm.trainers.world_model") != wm_base  # upstream length stays


def test_resume_cache_load_refuses_what_it_cannot_use(tmp_path, capsys):
    c = cache(tmp_path)
    assert c.load("epoch", 5) is None and capsys.readouterr().out == ""  # absent: silently fresh
    c.save(epoch=3, history=[])
    assert c.load("epoch", 5)["epoch"] == 3 and "toy: resuming from" in capsys.readouterr().out
    assert c.load("epoch", 2) is None and "has 3 epochs, more than the 2 asked" in capsys.readouterr().out
    other = cache(tmp_path, lr=0.5)
    other.path.parent.mkdir(parents=True, exist_ok=True)
    other.path.write_bytes(c.path.read_bytes())  # a file copied in by hand
    assert other.load("epoch", 5) is None
    assert "written under other params (toy.lr); starting fresh" in capsys.readouterr().out
    c.path.write_bytes(b"garbage")
    assert c.load("epoch", 5) is None and "is unreadable (" in capsys.readouterr().out


def test_resume_cache_keeps_the_most_recently_used(tmp_path, capsys):
    caches = [ResumeCache(tmp_path, "toy", {"i": i}) for i in range(KEEP_RESUME + 1)]
    now = time.time()
    for i, c in enumerate(caches[:KEEP_RESUME]):
        c.save(epoch=1)
        os.utime(c.path, (now - 1000 + i, now - 1000 + i))  # saved one second apart, oldest first
    assert len(list((tmp_path / "toy").iterdir())) == KEEP_RESUME  # nothing pruned yet
    assert caches[0].load("epoch", 5) is not None  # resuming from the oldest makes it the most recent
    caches[-1].save(epoch=1)
    kept = {p.name for p in (tmp_path / "toy").iterdir()}
    assert len(kept) == KEEP_RESUME and {caches[0].path.name, caches[-1].path.name} <= kept
    assert caches[1].path.name not in kept  # the least recently used is gone


# ----------------------------------------------------------------------------------------- Published files


def test_published_bytes_depend_only_on_the_values(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    shared = {"a": base[:, 1], "b": base.t(), "c": base[0]}  # views of one storage, non-contiguous
    fresh = {k: v.clone().contiguous() for k, v in shared.items()}
    fingerprint, meta = {"seed": 0, "vae": {"lr": 0.1, "epochs": 2}}, {"epoch": 2, "vae/val/mse": 0.25}
    # the same values in another key order (a resumed run rebuilds its dicts in another order)
    reordered = {"vae": {"epochs": 2, "lr": 0.1}, "seed": 0}, {"vae/val/mse": 0.25, "epoch": 2}
    publish(tmp_path / "one.pt", "vae", '{"x": 1}', shared, fingerprint, meta)
    publish(tmp_path / "two" / "other-name.pt", "vae", '{"x": 1}', fresh, *reordered)
    assert (tmp_path / "one.pt").read_bytes() == (tmp_path / "two" / "other-name.pt").read_bytes()
    raw = torch.load(tmp_path / "one.pt", weights_only=True)
    assert raw["format"] == "wm-weights/1" and set(raw) == {
        "format",
        "kind",
        "config",
        "fingerprint",
        "meta",
        "state_dict",
    }
    found = read_published(tmp_path / "one.pt", "vae")
    assert found.kind == "vae" and found.config == {"x": 1} and found.fingerprint == fingerprint and found.meta == meta
    assert all(torch.equal(found.state_dict[k], fresh[k]) for k in fresh)


def test_read_published_errors_name_the_producing_stage(tmp_path):
    with pytest.raises(WmError, match=r"nope\.pt: missing input \(run `dvc repro train_wm` first\)"):
        read_published(tmp_path / "nope.pt", "wm")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"garbage")
    with pytest.raises(WmError, match=r"garbage\.pt: unreadable model file \(UnpicklingError") as info:
        read_published(garbage, "vae")
    assert str(info.value).endswith("; run `dvc repro train_vae`")
    # a file of the old kind (a full training checkpoint with pickled objects) is refused, not unpickled
    old = tmp_path / "old.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 1, "spec": TrainSpec("vae", 1, 0.1, 0.0, None, "mse")}, old)
    with pytest.raises(WmError, match=r"old\.pt: unreadable model file"):
        read_published(old, "vae")
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 1}, old)  # loadable, but not a published file
    with pytest.raises(WmError, match=r"old\.pt: unreadable model file \(ValueError: format None\)"):
        read_published(old, "vae")
    publish(tmp_path / "wm.pt", "wm", "{}", {}, {}, {})
    with pytest.raises(WmError, match=r"wm\.pt holds a wm model, expected controller"):
        read_published(tmp_path / "wm.pt", "controller")


def test_unreadable_model_file_is_a_one_line_error(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"garbage")
    with pytest.raises(WmError) as info:
        read_published(garbage, "vae")
    assert len(str(info.value).splitlines()) == 1, str(info.value)
