"""Stages train_vae and encode, called in-process on one tiny rollouts file.

Resuming must be exact: a run stopped after an epoch (or killed mid-epoch) and continued publishes the same
model file and the same metric files, byte for byte, as an uninterrupted run; its resume checkpoint lives in
WM_CACHE_DIR (never beside the published model), and a checkpoint of other params is never resumed.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml

from stages import encode, train_vae
from wm.checkpoints import ResumeCache, read_published
from wm.collect import DataCollector
from wm.config import parse_params, vae_fingerprint
from wm.datafiles import Rollouts, load_tokens
from wm.errors import WmError
from wm.models.fsq import FSQ
from wm.models.fsq_vae import FSQVAE
from wm.runtime import RuntimeSettings, load_runtime
from wm.seeding import seed_everything
from wm.trainers.vae import VAETrainer

from .conftest import REPO, run_cli, tiny_params

# 3 episodes of 40 steps: 123 frames, 2 training episodes (82 frames, 6 batches of 16), 1 validation episode.
COLLECT = {"episodes": 3, "max_steps": 40}
BATCHES_PER_EPOCH = 6


def params_dict(**overrides) -> dict:
    return tiny_params(**overrides | {"collect": COLLECT | overrides.get("collect", {})})


def write_params(path: Path, **overrides) -> Path:
    path.write_text(yaml.safe_dump(params_dict(**overrides), sort_keys=False))
    return path


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rollouts") / "rollouts.h5"
    DataCollector(parse_params(params_dict())).collect(out, progress=False)
    return out


class Run:
    """The outputs of train_vae in one folder, and the resume cache (WM_CACHE_DIR) it trains with."""

    def __init__(self, root: Path, cache: Path | None = None):
        self.root, self.cache = root, cache or root / "cache"
        self.model, self.metrics, self.plots = root / "models" / "vae.pt", root / "vae.json", root / "plots"

    def train(self, data: Path, env: dict[str, str] | None = None, **overrides) -> Run:
        self.root.mkdir(parents=True, exist_ok=True)
        params = write_params(self.root / "params.yaml", **overrides)
        with pytest.MonkeyPatch.context() as m:
            for name, value in {"WM_CACHE_DIR": str(self.cache), **(env or {})}.items():
                m.setenv(name, value)
            load_runtime.cache_clear()
            try:
                train_vae.main(params=params, data=data, out=self.model, metrics=self.metrics, plots=self.plots)
            finally:
                load_runtime.cache_clear()
        return self

    def resume_path(self, **overrides) -> Path:
        cfg = parse_params(params_dict(**overrides))
        return ResumeCache.for_run(self.cache, "vae", vae_fingerprint(cfg), "epochs", "cpu", "wm.trainers.vae").path

    def resume_checkpoint(self, **overrides) -> dict:
        return torch.load(self.resume_path(**overrides), weights_only=False)

    def history(self) -> list[str]:
        return (self.plots / "history.csv").read_text().splitlines()


def train_run(root: Path, data: Path, **overrides) -> Run:
    return Run(root).train(data, **overrides)


def assert_same_run(a: Run, b: Run) -> None:
    """The same published model file (bytes: DVC sees the same output) and the same metric files."""
    assert a.model.read_bytes() == b.model.read_bytes()
    assert a.metrics.read_bytes() == b.metrics.read_bytes()
    assert (a.plots / "history.csv").read_bytes() == (b.plots / "history.csv").read_bytes()
    assert (a.plots / "recon.png").read_bytes() == (b.plots / "recon.png").read_bytes()


def assert_weights_only(run: Run) -> None:
    """models/ holds the published file alone, loadable without unpickling any object."""
    assert [p.name for p in run.model.parent.iterdir()] == ["vae.pt"]
    raw = torch.load(run.model, weights_only=True)
    assert set(raw) == {"format", "kind", "config", "fingerprint", "meta", "state_dict"}
    assert all(isinstance(v, torch.Tensor) for v in raw["state_dict"].values())


@pytest.fixture(scope="module")
def ref1(rollouts, tmp_path_factory) -> Run:
    """A fresh 1-epoch run (never modified by the tests)."""
    return train_run(tmp_path_factory.mktemp("ref1"), rollouts, vae={"epochs": 1})


@pytest.fixture(scope="module")
def ref2(rollouts, tmp_path_factory) -> Run:
    """An uninterrupted 2-epoch run (never modified by the tests)."""
    return train_run(tmp_path_factory.mktemp("ref2"), rollouts, vae={"epochs": 2})


def copy_cache(src: Run, root: Path) -> Run:
    """A new output folder whose resume cache holds a copy of `src`'s."""
    root.mkdir(parents=True)
    shutil.copytree(src.cache, root / "cache")
    return Run(root)


def count_batches(monkeypatch) -> list[int]:
    calls = [0]
    original = FSQVAE.compute_loss

    def counted(self, batch):
        calls[0] += 1
        return original(self, batch)

    monkeypatch.setattr(FSQVAE, "compute_loss", counted)
    return calls


# ------------------------------------------------------------------------------------------------ training


def test_training_lowers_loss_and_writes_artefacts(rollouts, tmp_path):
    run = train_run(tmp_path, rollouts, vae={"epochs": 3})
    metrics = json.loads(run.metrics.read_text())
    assert {"vae/val/mse", "vae/val/psnr", "vae/val/usage", "vae/val/perplexity"} <= set(metrics)
    assert metrics["epoch"] == metrics["best_epoch"] == 3 and metrics["epochs"] == 3
    assert 0 < metrics["vae/val/usage"] <= 1 and metrics["vae/val/perplexity"] >= 1
    assert metrics["vae/val/psnr"] == pytest.approx(-10 * np.log10(metrics["vae/val/mse"]))

    reader = csv.DictReader(run.history())
    rows = list(reader)
    assert reader.fieldnames[0] == "epoch" and {"vae/train/loss", "vae/val/mse"} <= set(reader.fieldnames)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]  # one row per epoch
    assert float(rows[-1]["vae/train/loss"]) < float(rows[0]["vae/train/loss"])
    assert float(rows[-1]["vae/val/mse"]) < float(rows[0]["vae/val/mse"])
    assert float(rows[-1]["vae/val/mse"]) == pytest.approx(metrics["vae/val/mse"], rel=1e-5)

    png = run.plots / "recon.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = iio.imread(png)
    # originals above reconstructions: 2 rows of 64-pixel frames upscaled 2x, 8 (unique) frames wide
    assert img.dtype == np.uint8 and img.shape[0] == 2 * 64 * 2 and img.shape[2] == 3
    assert img.shape[1] % (64 * 2) == 0 and 1 <= img.shape[1] // 128 <= 8

    # the published file: the selected weights, their metrics and the params that made them
    assert_weights_only(run)
    cfg = parse_params(params_dict(vae={"epochs": 3}))
    published = read_published(run.model, "vae")
    assert published.fingerprint == vae_fingerprint(cfg) and published.config == json.loads(
        cfg.fsq_vae.model_dump_json()
    )
    assert published.meta == pytest.approx(metrics, rel=1e-11)  # metrics JSON: 12 significant digits
    # the resume checkpoint lives in the cache, and the published weights are its best ones
    ckpt = run.resume_checkpoint(vae={"epochs": 3})
    assert ckpt["epoch"] == 3 and len(ckpt["history"]) == 3 and ckpt["best_epoch"] == 3
    assert published.state_dict.keys() == ckpt["best_model"].keys()
    assert all(torch.equal(published.state_dict[k], v) for k, v in ckpt["best_model"].items())
    model = FSQVAE.from_file(run.model, vae_fingerprint(cfg))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ckpt["best_model"].items())
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]  # atomic writes leave no temporaries


def test_raising_epochs_resumes_exactly(rollouts, ref1, ref2, tmp_path, capsys):
    run = train_run(tmp_path, rollouts, vae={"epochs": 1})
    assert len(run.history()) == 2
    assert_same_run(run, ref1)
    capsys.readouterr()
    run.train(rollouts, vae={"epochs": 2})
    assert f"vae: resuming from {run.resume_path()} at epoch 1/2" in capsys.readouterr().out
    assert_same_run(run, ref2)
    assert ref1.model.read_bytes() != ref2.model.read_bytes()  # another model: vae.epochs is in its fingerprint


def test_finished_checkpoint_rewrites_artefacts_without_training(rollouts, ref2, tmp_path, capsys, monkeypatch):
    run = copy_cache(ref2, tmp_path / "run")
    calls = count_batches(monkeypatch)
    capsys.readouterr()
    run.train(rollouts, vae={"epochs": 2})
    out = capsys.readouterr().out
    assert calls == [0] and "vae epoch" not in out and "train/loss" not in out  # no epoch was trained
    assert_same_run(run, ref2)


def test_killed_mid_epoch_resumes_exactly(rollouts, ref2, tmp_path, monkeypatch, capsys):
    calls = 0
    original = FSQVAE.compute_loss

    def dying_compute_loss(self, batch):
        nonlocal calls
        calls += 1
        if calls == BATCHES_PER_EPOCH + 3:  # the 3rd batch of the 2nd epoch
            raise KeyboardInterrupt
        return original(self, batch)

    run = Run(tmp_path / "run", cache=tmp_path / "cache-of-killed-run")
    with monkeypatch.context() as m:
        m.setattr(FSQVAE, "compute_loss", dying_compute_loss)
        with pytest.raises(KeyboardInterrupt):
            run.train(rollouts, vae={"epochs": 2})
    assert calls == BATCHES_PER_EPOCH + 3
    assert not run.model.parent.exists()  # nothing published, and no resume state beside the outputs
    assert [p.name for p in run.cache.rglob("*.pt")] == [run.resume_path().name]  # it is in WM_CACHE_DIR
    assert run.resume_checkpoint()["epoch"] == 1  # the checkpoint of epoch 1 survived
    assert len(run.history()) == 2

    # another WM_CACHE_DIR has nothing to resume: a fresh run
    elsewhere = Run(tmp_path / "elsewhere", cache=tmp_path / "empty-cache")
    batches = count_batches(monkeypatch)
    capsys.readouterr()
    elsewhere.train(rollouts, vae={"epochs": 2})
    assert batches == [2 * BATCHES_PER_EPOCH] and "resuming" not in capsys.readouterr().out
    assert_same_run(elsewhere, ref2)

    # the killed run's cache: only the second epoch is trained again, and the outputs are those of ref2
    batches[0] = 0
    run.train(rollouts, vae={"epochs": 2})
    assert f"vae: resuming from {run.resume_path()} at epoch 1/2" in capsys.readouterr().out
    assert batches == [BATCHES_PER_EPOCH]
    assert_same_run(run, ref2)
    assert_weights_only(run)


@pytest.mark.parametrize(
    "old_overrides", [{"vae": {"epochs": 1, "lr": 3e-3}}, {"vae": {"epochs": 1}, "fsq": {"levels": [5, 5]}}]
)
def test_checkpoint_of_other_params_is_not_resumed(rollouts, ref1, tmp_path, capsys, old_overrides):
    run = train_run(tmp_path, rollouts, **old_overrides)
    capsys.readouterr()
    run.train(rollouts, vae={"epochs": 1})
    out = capsys.readouterr().out
    assert "resuming" not in out and "other params" not in out  # another key: not even looked at
    assert_same_run(run, ref1)
    assert len(list(run.cache.rglob("*.pt"))) == 2  # both runs stay resumable


def test_checkpoint_with_more_epochs_is_not_resumed(rollouts, ref1, ref2, tmp_path, capsys):
    run = copy_cache(ref2, tmp_path / "run")
    capsys.readouterr()
    run.train(rollouts, vae={"epochs": 1})
    assert "has 2 epochs, more than the 1 asked; starting fresh" in capsys.readouterr().out
    assert_same_run(run, ref1)


@pytest.mark.parametrize("resumed", [False, True], ids=["fresh", "resumed_in_memory_run"])
def test_load_limit_is_a_runtime_setting(rollouts, ref2, tmp_path, capsys, resumed):
    """WM_LOAD_LIMIT_GB only says where the frames live: 0 streams them from HDF5, with the same batches,
    so the outputs are byte-identical and a checkpoint of an in-memory run resumes."""
    run = train_run(tmp_path, rollouts, vae={"epochs": 1}) if resumed else Run(tmp_path)
    capsys.readouterr()
    run.train(rollouts, env={"WM_LOAD_LIMIT_GB": "0"}, vae={"epochs": 2})
    out = capsys.readouterr().out
    assert ("resuming from" in out) == resumed and "other params" not in out
    assert [line.split(",")[0] for line in run.history()[1:]] == ["1", "2"]
    assert_same_run(run, ref2)


@pytest.mark.parametrize("garbage", [b"", b"\x00garbage, not a torch checkpoint" * 10], ids=["empty", "garbage"])
def test_corrupt_checkpoint_starts_fresh(rollouts, ref1, tmp_path, capsys, garbage):
    run = Run(tmp_path)
    run.resume_path().parent.mkdir(parents=True)
    run.resume_path().write_bytes(garbage)
    run.train(rollouts, vae={"epochs": 1})
    captured = capsys.readouterr()
    assert "is unreadable" in captured.out and "starting fresh" in captured.out
    assert "Traceback" not in captured.out + captured.err
    assert_same_run(run, ref1)


def test_cli_missing_rollouts_is_a_one_line_error(tmp_path):
    params = write_params(tmp_path / "params.yaml")
    missing = tmp_path / "nope.h5"
    outputs = ["--out", str(tmp_path / "models" / "vae.pt"), "--metrics", str(tmp_path / "metrics" / "vae.json")]
    proc = run_cli(
        [sys.executable, "-m", "stages.train_vae", "--params", str(params), "--data", str(missing), *outputs]
        + ["--plots", str(tmp_path / "plots")],
        REPO,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing input" in lines[0], proc.stderr
    assert str(missing) in lines[0] and "dvc repro collect" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no output of any kind


def test_trainer_api_is_the_stage(rollouts, ref1, tmp_path, monkeypatch):
    """VAETrainer with explicit runtime settings (streaming frames, its own cache) publishes the stage's model."""
    cfg = parse_params(params_dict(vae={"epochs": 1}))
    seed_everything(cfg.seed)  # what the stage does first (wm.cli.load_config)
    runtime = RuntimeSettings(cache_dir=tmp_path / "cache", load_limit_gb=0, progress=False)
    trainer = VAETrainer(FSQVAE(cfg.fsq_vae), cfg, runtime)
    result = trainer.fit(rollouts)
    trainer.publish(tmp_path / "vae.pt")
    assert (tmp_path / "vae.pt").read_bytes() == ref1.model.read_bytes()
    assert result.selected == pytest.approx(json.loads(ref1.metrics.read_text()), rel=1e-11)
    assert all(torch.equal(trainer.vae.state_dict()[k], v) for k, v in result.best_model.items())
    assert len(list((tmp_path / "cache" / "vae").glob("*.pt"))) == 1  # the runtime's cache, not WM_CACHE_DIR's
    assert not Path(load_runtime().cache_dir).exists()


def test_trainer_writes_metrics_without_plots(rollouts, tmp_path):
    cfg = parse_params(params_dict(vae={"epochs": 1}))
    VAETrainer(FSQVAE(cfg.fsq_vae), cfg).fit(rollouts, metrics=tmp_path / "vae.json")
    assert json.loads((tmp_path / "vae.json").read_text())["epochs"] == 1


# -------------------------------------------------------------------------------------------------- encode


def run_encode(tmp_path: Path, data: Path, model: Path, **overrides) -> tuple[Path, Path]:
    params = write_params(tmp_path / "encode-params.yaml", **overrides)
    out, metrics = tmp_path / "tokens.h5", tmp_path / "encode.json"
    encode.main(params=params, data=data, vae=model, out=out, metrics=metrics)
    return out, metrics


def test_encode_writes_aligned_tokens(rollouts, ref2, tmp_path):
    bs = 32  # 123 frames: the last batch is partial
    out, metrics = run_encode(tmp_path, rollouts, ref2.model, vae={"epochs": 2}, encode={"batch_size": bs})
    levels = tiny_params()["fsq"]["levels"]
    K, D = int(np.prod(levels)), len(levels)
    with h5py.File(out) as f, Rollouts(rollouts) as r:
        F = r.frames.shape[0]
        tokens, codes = f["tokens"][:], f["codes"][:]
        assert tokens.shape == (F,) and tokens.dtype == np.int64
        assert codes.shape == (F, D) and codes.dtype == np.float32
        assert tokens.min() >= 0 and tokens.max() < K
        for key in ("actions", "rewards", "terminated", "truncated", "step_offsets", "track_seeds"):
            assert f[key].dtype == getattr(r.steps, key).dtype, key
            assert np.array_equal(f[key][:], getattr(r.steps, key)), key
        assert json.loads(f.attrs["levels"]) == levels

        # codes lie on the FSQ grid and are the codes of the tokens
        fsq = FSQ(levels)
        assert torch.equal(fsq.indices_to_codes(torch.from_numpy(tokens)), torch.from_numpy(codes))
        half = fsq.half_width.numpy()
        assert np.array_equal(codes * half, np.round(codes * half)) and (np.abs(codes) <= 1).all()

        # tokens are FSQVAE.encode of the frames, row for row (same batches as the stage, so exact)
        cfg = parse_params(params_dict(vae={"epochs": 2}))
        model = FSQVAE.from_file(ref2.model, vae_fingerprint(cfg))
        frames = torch.from_numpy(r.frames[:])
        expected = [model.encode(frames[i : i + bs]) for i in range(0, F, bs)]
        assert np.array_equal(tokens, torch.cat([t for t, _ in expected]).numpy())
        assert np.array_equal(codes, torch.cat([c for _, c in expected]).numpy())

    data = load_tokens(out)
    assert np.array_equal(data.tokens, tokens) and data.levels == levels
    summary = json.loads(metrics.read_text())
    assert summary["encode/all/frames"] == F
    assert summary["encode/all/usage"] == pytest.approx(len(np.unique(tokens)) / K)


@pytest.mark.parametrize(
    ("changed", "overrides"),
    [
        ("vae.lr", {"vae": {"epochs": 2, "lr": 3e-3}}),
        ("fsq.levels", {"vae": {"epochs": 2}, "fsq": {"levels": [5, 5]}}),
        ("vae.epochs", {"vae": {"epochs": 5}}),  # a longer run is another model
        ("collect.episodes", {"vae": {"epochs": 2}, "collect": {"episodes": 4}}),
    ],
)
def test_encode_refuses_vae_of_other_params(rollouts, ref2, tmp_path, changed, overrides):
    with pytest.raises(WmError, match=rf"trained under other params \({changed}\).*dvc repro train_vae"):
        run_encode(tmp_path, rollouts, ref2.model, **overrides)
    assert not (tmp_path / "tokens.h5").exists()


def test_encode_ignores_encode_params_and_runtime_settings(rollouts, ref2, tmp_path, monkeypatch):
    """Neither the encode batch size nor a runtime setting is in the VAE's fingerprint."""
    monkeypatch.setenv("WM_LOAD_LIMIT_GB", "0")
    monkeypatch.setenv("WM_WORKERS", "auto")
    load_runtime.cache_clear()
    out, _ = run_encode(tmp_path, rollouts, ref2.model, vae={"epochs": 2}, encode={"batch_size": 1000})
    assert out.is_file()


def test_encode_missing_inputs(rollouts, ref2, tmp_path):
    with pytest.raises(WmError, match=r"nope\.h5: missing input .*dvc repro collect"):
        run_encode(tmp_path, tmp_path / "nope.h5", ref2.model, vae={"epochs": 2})
    with pytest.raises(WmError, match=r"nope\.pt: missing input .*dvc repro train_vae"):
        run_encode(tmp_path, rollouts, tmp_path / "nope.pt", vae={"epochs": 2})
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(WmError, match="unreadable model file"):
        run_encode(tmp_path, rollouts, bad, vae={"epochs": 2})
    # a resume checkpoint is not a model file: it is refused, never unpickled
    with pytest.raises(WmError, match="unreadable model file"):
        run_encode(tmp_path, rollouts, ref2.resume_path(vae={"epochs": 2}), vae={"epochs": 2})
    assert not (tmp_path / "tokens.h5").exists()
