"""Stages train_vae and encode, called in-process on one tiny rollouts file.

Resuming must be exact: a run stopped after an epoch (or killed mid-epoch) and continued ends with the
same weights and the same metric files, byte for byte, as an uninterrupted run; a checkpoint of other
params is never resumed.
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
from wm.collect import collect
from wm.config import parse_params
from wm.data import Rollouts, load_tokens
from wm.models.fsq import FSQ
from wm.models.fsq_vae import FSQVAE
from wm.utils import WmError

from .conftest import REPO, run_cli, tiny_params

# 3 episodes of 40 steps: 123 frames, 2 training episodes (82 frames, 6 batches of 16), 1 validation episode.
COLLECT = {"episodes": 3, "max_steps": 40}
BATCHES_PER_EPOCH = 6


def write_params(path: Path, **overrides) -> Path:
    path.write_text(yaml.safe_dump(tiny_params(collect=COLLECT, **overrides), sort_keys=False))
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models gain nothing from threads, and on a busy machine spinning OpenMP threads make
    these tests ~10x slower; every run in this module uses the same setting, so equality is unaffected."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rollouts") / "rollouts.h5"
    collect(parse_params(tiny_params(collect=COLLECT)), out, progress=False)
    return out


class Run:
    """The outputs of train_vae in one folder."""

    def __init__(self, root: Path):
        self.root = root
        self.ckpt, self.metrics, self.plots = root / "vae.pt", root / "vae.json", root / "plots"

    def train(self, data: Path, **overrides) -> Run:
        params = write_params(self.root / "params.yaml", **overrides)
        train_vae.main(params=params, data=data, out=self.ckpt, metrics=self.metrics, plots=self.plots)
        return self

    def weights(self) -> dict[str, torch.Tensor]:
        return torch.load(self.ckpt, weights_only=False)["model"]

    def history(self) -> list[str]:
        return (self.plots / "history.csv").read_text().splitlines()


def train_run(root: Path, data: Path, **overrides) -> Run:
    root.mkdir(parents=True, exist_ok=True)
    return Run(root).train(data, **overrides)


def assert_same_run(a: Run, b: Run) -> None:
    wa, wb = a.weights(), b.weights()
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert a.metrics.read_bytes() == b.metrics.read_bytes()
    assert (a.plots / "history.csv").read_bytes() == (b.plots / "history.csv").read_bytes()
    assert (a.plots / "recon.png").read_bytes() == (b.plots / "recon.png").read_bytes()


@pytest.fixture(scope="module")
def ref1(rollouts, tmp_path_factory) -> Run:
    """A fresh 1-epoch run (never modified by the tests)."""
    return train_run(tmp_path_factory.mktemp("ref1"), rollouts, vae={"epochs": 1})


@pytest.fixture(scope="module")
def ref2(rollouts, tmp_path_factory) -> Run:
    """An uninterrupted 2-epoch run (never modified by the tests)."""
    return train_run(tmp_path_factory.mktemp("ref2"), rollouts, vae={"epochs": 2})


def copy_ckpt(src: Run, root: Path) -> Run:
    root.mkdir(parents=True)
    shutil.copy(src.ckpt, root / "vae.pt")
    return Run(root)


# ------------------------------------------------------------------------------------------------ training


def test_training_lowers_loss_and_writes_artefacts(rollouts, tmp_path):
    run = train_run(tmp_path, rollouts, vae={"epochs": 3})
    metrics = json.loads(run.metrics.read_text())
    assert {"vae/val/mse", "vae/val/psnr", "vae/val/usage", "vae/val/perplexity"} <= set(metrics)
    assert metrics["epoch"] == 3
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
    ckpt = torch.load(run.ckpt, weights_only=False)
    assert ckpt["epoch"] == 3 and len(ckpt["history"]) == 3
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_raising_epochs_resumes_exactly(rollouts, ref2, tmp_path, capsys):
    run = train_run(tmp_path, rollouts, vae={"epochs": 1})
    assert len(run.history()) == 2
    capsys.readouterr()
    run.train(rollouts, vae={"epochs": 2})
    assert "resuming from" in capsys.readouterr().out
    assert_same_run(run, ref2)


def test_finished_checkpoint_rewrites_artefacts_without_training(rollouts, ref2, tmp_path, capsys):
    run = copy_ckpt(ref2, tmp_path / "run")
    capsys.readouterr()
    run.train(rollouts, vae={"epochs": 2})
    out = capsys.readouterr().out
    assert "vae epoch" not in out and "train/loss" not in out  # no epoch was trained
    assert_same_run(run, ref2)


def test_killed_mid_epoch_resumes_exactly(rollouts, ref2, tmp_path, monkeypatch):
    calls = 0
    original = FSQVAE.compute_loss

    def dying_compute_loss(self, batch):
        nonlocal calls
        calls += 1
        if calls == BATCHES_PER_EPOCH + 3:  # the 3rd batch of the 2nd epoch
            raise KeyboardInterrupt
        return original(self, batch)

    run = Run(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(FSQVAE, "compute_loss", dying_compute_loss)
        with pytest.raises(KeyboardInterrupt):
            run.train(rollouts, vae={"epochs": 2})
    assert calls == BATCHES_PER_EPOCH + 3
    assert torch.load(run.ckpt, weights_only=False)["epoch"] == 1  # the checkpoint of epoch 1 survived
    assert len(run.history()) == 2
    run.train(rollouts, vae={"epochs": 2})
    assert_same_run(run, ref2)


@pytest.mark.parametrize(
    ("changed", "old_overrides"),
    [("vae.lr", {"vae": {"epochs": 1, "lr": 3e-3}}), ("fsq.levels", {"vae": {"epochs": 1}, "fsq": {"levels": [5, 5]}})],
)
def test_checkpoint_of_other_params_is_not_resumed(rollouts, ref1, tmp_path, capsys, changed, old_overrides):
    run = train_run(tmp_path, rollouts, **old_overrides)
    capsys.readouterr()
    run.train(rollouts, vae={"epochs": 1})
    out = capsys.readouterr().out
    assert f"trained under other params ({changed}); starting fresh" in out
    assert "resuming" not in out
    assert_same_run(run, ref1)


def test_checkpoint_with_more_epochs_is_not_resumed(rollouts, ref1, ref2, tmp_path, capsys):
    run = copy_ckpt(ref2, tmp_path / "run")
    capsys.readouterr()
    run.train(rollouts, vae={"epochs": 1})
    assert "has 2 epochs, more than the 1 asked; starting fresh" in capsys.readouterr().out
    assert_same_run(run, ref1)


def test_load_limit_is_not_part_of_the_fingerprint(rollouts, tmp_path, capsys):
    """load_limit_gb only says where the frames live: 0 streams them, and the checkpoint still resumes."""
    run = train_run(tmp_path, rollouts, vae={"epochs": 1})
    capsys.readouterr()
    run.train(rollouts, vae={"epochs": 2, "load_limit_gb": 0.0})
    out = capsys.readouterr().out
    assert "resuming from" in out and "other params" not in out
    assert [line.split(",")[0] for line in run.history()[1:]] == ["1", "2"]


@pytest.mark.parametrize("garbage", [b"", b"\x00garbage, not a torch checkpoint" * 10], ids=["empty", "garbage"])
def test_corrupt_checkpoint_starts_fresh(rollouts, ref1, tmp_path, capsys, garbage):
    run = Run(tmp_path)
    run.ckpt.write_bytes(garbage)
    run.train(rollouts, vae={"epochs": 1})
    captured = capsys.readouterr()
    assert "is unreadable" in captured.out and "starting fresh" in captured.out
    assert "Traceback" not in captured.out + captured.err
    assert_same_run(run, ref1)


def test_cli_missing_rollouts_is_a_one_line_error(tmp_path):
    params = write_params(tmp_path / "params.yaml")
    missing = tmp_path / "nope.h5"
    proc = run_cli(
        [sys.executable, "-m", "stages.train_vae", "--params", str(params), "--data", str(missing)], REPO, check=False
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing input" in lines[0], proc.stderr
    assert str(missing) in lines[0] and "dvc repro collect" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "models").exists()


# -------------------------------------------------------------------------------------------------- encode


def run_encode(tmp_path: Path, data: Path, ckpt: Path, **overrides) -> tuple[Path, Path]:
    params = write_params(tmp_path / "encode-params.yaml", **overrides)
    out, metrics = tmp_path / "tokens.h5", tmp_path / "encode.json"
    encode.main(params=params, data=data, vae=ckpt, out=out, metrics=metrics)
    return out, metrics


def test_encode_writes_aligned_tokens(rollouts, ref2, tmp_path):
    bs = 32  # 123 frames: the last batch is partial
    out, metrics = run_encode(tmp_path, rollouts, ref2.ckpt, vae={"epochs": 2}, encode={"batch_size": bs})
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
        cfg = parse_params(tiny_params(collect=COLLECT, vae={"epochs": 2}))
        model = FSQVAE(cfg.fsq, cfg.vae).eval()
        model.load_state_dict(ref2.weights())
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
    [("vae.lr", {"vae": {"epochs": 2, "lr": 3e-3}}), ("fsq.levels", {"vae": {"epochs": 2}, "fsq": {"levels": [5, 5]}})],
)
def test_encode_refuses_vae_of_other_params(rollouts, ref2, tmp_path, changed, overrides):
    with pytest.raises(WmError, match=rf"trained under other params \({changed}\).*dvc repro train_vae"):
        run_encode(tmp_path, rollouts, ref2.ckpt, **overrides)
    assert not (tmp_path / "tokens.h5").exists()


def test_encode_ignores_epochs_and_encode_params(rollouts, ref2, tmp_path):
    """`epochs` is not in the fingerprint: a 2-epoch VAE is accepted under params asking for 5."""
    out, _ = run_encode(tmp_path, rollouts, ref2.ckpt, vae={"epochs": 5}, encode={"batch_size": 1000})
    assert out.is_file()


def test_encode_missing_inputs(rollouts, ref2, tmp_path):
    with pytest.raises(WmError, match=r"nope\.h5: missing input .*dvc repro collect"):
        run_encode(tmp_path, tmp_path / "nope.h5", ref2.ckpt, vae={"epochs": 2})
    with pytest.raises(WmError, match=r"nope\.pt: missing input .*dvc repro train_vae"):
        run_encode(tmp_path, rollouts, tmp_path / "nope.pt", vae={"epochs": 2})
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(WmError, match="unreadable checkpoint"):
        run_encode(tmp_path, rollouts, bad, vae={"epochs": 2})
    assert not (tmp_path / "tokens.h5").exists()
