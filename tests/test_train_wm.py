"""The train_wm stage on synthetic tokens files: metrics, beating the repeat baseline, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stages import train_wm
from wm.batches import WindowLoader, split_episodes
from wm.checkpoints import Published, ResumeCache, read_published
from wm.config import parse_params, wm_fingerprint
from wm.datafiles import StepData, load_tokens, write_tokens
from wm.errors import WmError
from wm.models.world_model import WorldModel
from wm.runtime import RuntimeSettings, load_runtime
from wm.seeding import seed_everything
from wm.trainers.world_model import WorldModelTrainer, wm_validation

from .conftest import tiny_params

LEVELS = [4, 4]  # K = 16


def write_synthetic_tokens(path: Path, lengths: list[int], steps_of: list[int], seed: int) -> None:
    """Episodes where the next token is (token + delta) % 16, delta drawn from `steps_of` and given to the
    model as the gas action (delta / 4); the reward is delta and the last step terminates."""
    rng = np.random.default_rng(seed)
    tokens, actions, rewards, terminated = [], [], [], []
    for T in lengths:
        delta = rng.choice(steps_of, T)
        tok = np.concatenate([[rng.integers(16)], np.zeros(T, int)])
        for t in range(T):
            tok[t + 1] = (tok[t] + delta[t]) % 16
        tokens.append(tok)
        actions.append(np.stack([np.zeros(T), delta / 4, np.zeros(T)], 1))
        rewards.append(delta.astype(float))
        terminated.append(np.arange(T) == T - 1)
    steps = StepData(
        actions=np.concatenate(actions).astype(np.float32),
        rewards=np.concatenate(rewards).astype(np.float32),
        terminated=np.concatenate(terminated),
        truncated=np.zeros(sum(lengths), bool),
        step_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        track_seeds=np.arange(len(lengths), dtype=np.uint64),
    )
    tok = np.concatenate(tokens)
    codes = np.zeros((len(tok), 2), np.float32)
    write_tokens(path, tok, codes, steps, {"levels": LEVELS, "seed": 0})


class Runs:
    """train_wm runs on one tokens file; each named run has its own outputs and its own resume cache."""

    def __init__(self, root: Path, data: Path, **wm):
        self.root, self.data, self.wm = root, data, wm

    def params(self, epochs: int, **wm) -> dict:
        wm = {"epochs": epochs, "seq_len": 8, "val_fraction": 0.34} | self.wm | wm
        return tiny_params(fsq={"levels": LEVELS}, wm=wm)

    def paths(self, name: str) -> dict[str, Path]:
        r = self.root
        return {"out": r / name / "wm.pt", "metrics": r / f"{name}.json", "plots": r / f"{name}_plots"}

    def cache(self, name: str) -> Path:
        return self.root / "cache" / name

    def __call__(self, name: str, epochs: int, **wm) -> Published:
        params = self.root / f"{name}.yaml"
        params.write_text(yaml.safe_dump(self.params(epochs, **wm)))
        with pytest.MonkeyPatch.context() as m:
            m.setenv("WM_CACHE_DIR", str(self.cache(name)))
            load_runtime.cache_clear()
            try:
                train_wm.main(params=params, data=self.data, **self.paths(name))
            finally:
                load_runtime.cache_clear()
        return read_published(self.paths(name)["out"], "wm")

    def metrics(self, name: str) -> dict:
        return json.loads(self.paths(name)["metrics"].read_text())

    def resume_path(self, name: str, epochs: int = 1) -> Path:
        fingerprint = wm_fingerprint(parse_params(self.params(epochs))) | {"run": None}  # not a round's training
        return ResumeCache.for_run(self.cache(name), "wm", fingerprint, "epochs", "cpu", "wm.trainers.world_model").path

    def same(self, a: str, b: str) -> bool:
        pa, pb = self.paths(a), self.paths(b)
        return (
            pa["out"].read_bytes() == pb["out"].read_bytes()
            and pa["metrics"].read_bytes() == pb["metrics"].read_bytes()
            and (pa["plots"] / "history.csv").read_bytes() == (pb["plots"] / "history.csv").read_bytes()
        )


@pytest.fixture
def runs(tmp_path) -> Runs:
    """6 episodes where the next token is (token + gas level) % 16 and the last step terminates; the
    5-step episode is shorter than seq_len and must be skipped."""
    write_synthetic_tokens(tmp_path / "tokens.h5", [30, 40, 25, 35, 30, 5], [0, 1, 2], seed=0)
    return Runs(tmp_path, tmp_path / "tokens.h5")


def test_train_wm_metrics(runs):
    published = runs("a", 3)
    metrics = runs.metrics("a")
    for key in ("acc", "top5", "repeat_acc", "reward_mse", "done_precision", "done_recall", "done_true"):
        assert f"wm/val/{key}" in metrics, key
    assert 0.0 <= metrics["wm/val/repeat_acc"] <= 1.0
    assert metrics["epochs"] == 3 and 1 <= metrics["best_epoch"] == metrics["epoch"] <= 3
    assert published.meta == pytest.approx(metrics, rel=1e-11)
    assert published.fingerprint == wm_fingerprint(parse_params(runs.params(3)))
    ckpt = torch.load(runs.resume_path("a"), weights_only=False)  # the resume checkpoint is in WM_CACHE_DIR
    assert ckpt["epoch"] == 3 and len(ckpt["history"]) == 3
    assert all(torch.equal(published.state_dict[k], v) for k, v in ckpt["best_model"].items())
    assert (runs.paths("a")["plots"] / "history.csv").read_text().count("\n") == 4
    assert [p.name for p in runs.paths("a")["out"].parent.iterdir()] == ["wm.pt"]
    raw = torch.load(runs.paths("a")["out"], weights_only=True)  # weights only: nothing to unpickle
    assert "optimizer" not in raw and "codes" not in raw["state_dict"]


def test_resume_equals_uninterrupted(runs, capsys):
    runs("full", 2)
    runs("part", 1)
    capsys.readouterr()
    runs("part", 2)  # more epochs: continues from the 1-epoch checkpoint
    assert f"wm: resuming from {runs.resume_path('part')} at epoch 1/2" in capsys.readouterr().out
    assert runs.same("full", "part")


def test_killed_mid_epoch_resumes_exactly(runs, monkeypatch, capsys):
    runs("full", 3)
    original = WorldModel.compute_loss
    calls = {"validation": 0, "training after validation": 0}

    def dying_compute_loss(self, batch):
        if not self.training:
            calls["validation"] += 1
        elif calls["validation"]:
            calls["training after validation"] += 1
            if calls["training after validation"] == 3:
                raise KeyboardInterrupt  # the 3rd batch of the 2nd epoch
        return original(self, batch)

    with monkeypatch.context() as m:
        m.setattr(WorldModel, "compute_loss", dying_compute_loss)
        with pytest.raises(KeyboardInterrupt):
            runs("part", 3)
    assert not runs.paths("part")["out"].exists()  # nothing published
    assert torch.load(runs.resume_path("part"), weights_only=False)["epoch"] == 1
    capsys.readouterr()
    runs("part", 3)
    assert "at epoch 1/3" in capsys.readouterr().out
    assert runs.same("full", "part")


def test_levels_mismatch_is_a_clear_error(runs, tmp_path):
    params = tmp_path / "bad.yaml"
    params.write_text(yaml.safe_dump(tiny_params()))  # fsq.levels [8,5,5,5] but tokens.h5 holds [4,4]
    with pytest.raises(WmError, match=r"encoded with fsq.levels=\[4, 4\].*dvc repro encode"):
        train_wm.main(
            params=params,
            data=tmp_path / "tokens.h5",
            out=tmp_path / "x.pt",
            metrics=tmp_path / "x.json",
            plots=tmp_path / "x",
        )
    assert not (tmp_path / "x.pt").exists()


def test_trainer_api_is_the_stage(runs, tmp_path):
    """WorldModelTrainer on tokens in memory, with explicit runtime settings, publishes the stage's model."""
    runs("stage", 2)
    cfg = parse_params(runs.params(2))
    seed_everything(cfg.seed)  # what the stage does first (wm.cli.load_config)
    runtime = RuntimeSettings(cache_dir=tmp_path / "api-cache", progress=False)
    trainer = WorldModelTrainer(WorldModel(cfg.world_model), None, cfg, runtime)
    result = trainer.fit(load_tokens(runs.data))
    trainer.publish(tmp_path / "api.pt")
    assert (tmp_path / "api.pt").read_bytes() == runs.paths("stage")["out"].read_bytes()
    assert result.selected == pytest.approx(runs.metrics("stage"), rel=1e-11)
    assert len(list((tmp_path / "api-cache" / "wm").glob("*.pt"))) == 1
    with pytest.raises(ValueError, match="encoding frames needs the VAE"):
        trainer.encode(tmp_path / "rollouts.h5", tmp_path / "tokens2.h5")


def test_levels_mismatch_of_tokens_in_memory_is_a_one_line_error(runs):
    cfg = parse_params(tiny_params())  # fsq.levels [8,5,5,5] but the tokens hold [4,4]
    trainer = WorldModelTrainer(WorldModel(cfg.world_model), None, cfg)
    with pytest.raises(WmError, match=r"fsq.levels=\[4, 4\], params say \[8, 5, 5, 5\]") as info:
        trainer.fit(load_tokens(runs.data))
    assert len(str(info.value).splitlines()) == 1 and len(str(info.value)) < 300, str(info.value)[:500]


def test_trainer_writes_metrics_without_plots(runs, tmp_path):
    cfg = parse_params(runs.params(1))
    WorldModelTrainer(WorldModel(cfg.world_model), None, cfg).fit(runs.data, metrics=tmp_path / "wm.json")
    assert json.loads((tmp_path / "wm.json").read_text())["epochs"] == 1


def test_seq_len_longer_than_every_episode_is_a_clear_error(runs):
    with pytest.raises(WmError, match=r"no episode has wm.seq_len=41 steps on both sides of the split"):
        runs("long", 1, seq_len=41)


def test_equal_runs_write_identical_checkpoints(runs):
    runs("x", 1)
    runs("y", 1)  # its own resume cache: trained again, not restored from x's checkpoint
    assert runs.same("x", "y")  # DVC sees the same output


def test_beats_the_repeat_baseline_on_learnable_dynamics(tmp_path):
    """The next token is (token + delta) % 16 with delta in {0, 1, 2, 3} given as the action: repeating the
    current token is right a quarter of the time, the dynamics always. The selected, published model has to
    learn them, and the metrics must be those of the published weights."""
    write_synthetic_tokens(tmp_path / "tokens.h5", [48] * 30, [0, 1, 2, 3], seed=1)
    runs = Runs(tmp_path, tmp_path / "tokens.h5", batch_size=8, lr=2e-2, val_fraction=0.2)  # tiny LSTM, 32 units
    published = runs("learn", 20)
    metrics = runs.metrics("learn")
    assert 0.15 < metrics["wm/val/repeat_acc"] < 0.35
    # measured: 0.92-0.97 over master seeds 0-4 (the repeat baseline 0.21-0.24)
    assert metrics["wm/val/acc"] > max(0.8, metrics["wm/val/repeat_acc"] + 0.5), metrics
    assert metrics["wm/val/top5"] >= metrics["wm/val/acc"]

    # the published weights give these metrics on the validation episodes
    cfg = parse_params(runs.params(20))
    model = WorldModel.from_published(published)
    data = load_tokens(tmp_path / "tokens.h5")
    _, val_eps = split_episodes(data.steps.num_episodes, cfg.wm.val_fraction, cfg.seed)
    windows = WindowLoader(data, val_eps, cfg.wm.seq_len, cfg.wm.batch_size, torch.device("cpu"))
    with torch.no_grad():
        val = wm_validation(model, windows.epoch(None))
    assert val["acc"] == pytest.approx(metrics["wm/val/acc"], abs=1e-9)
    assert val["ce"] == pytest.approx(metrics["wm/val/ce"], rel=1e-6)
