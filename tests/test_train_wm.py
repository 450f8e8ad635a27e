"""The train_wm stage on a synthetic tokens file: metrics, the repeat baseline, exact resume."""

import json

import numpy as np
import pytest
import torch
import yaml

from stages import train_wm
from wm.data import StepData, write_tokens
from wm.utils import WmError

from .conftest import tiny_params

LEVELS = [4, 4]  # K = 16


@pytest.fixture
def setup(tmp_path):
    """6 episodes where the next token is (token + gas level) % 16 and the last step terminates."""
    rng = np.random.default_rng(0)
    lengths = [30, 40, 25, 35, 30, 5]  # the 5-step episode is shorter than seq_len and must be skipped
    tokens, actions, rewards, terminated = [], [], [], []
    for T in lengths:
        gas = rng.integers(0, 3, T)
        tok = np.concatenate([[rng.integers(16)], np.zeros(T, int)])
        for t in range(T):
            tok[t + 1] = (tok[t] + gas[t]) % 16
        tokens.append(tok)
        actions.append(np.stack([np.zeros(T), gas / 2, np.zeros(T)], 1))
        rewards.append(gas.astype(float))
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
    write_tokens(tmp_path / "tokens.h5", tok, codes, steps, {"levels": LEVELS, "seed": 0})

    def run(name: str, epochs: int, **wm) -> dict:
        params = tmp_path / f"{name}.yaml"
        p = tiny_params(fsq={"levels": LEVELS}, wm={"epochs": epochs, "seq_len": 8, "val_fraction": 0.34} | wm)
        params.write_text(yaml.safe_dump(p))
        out = tmp_path / f"{name}.pt"
        train_wm.main(
            params=params,
            data=tmp_path / "tokens.h5",
            out=out,
            metrics=tmp_path / f"{name}.json",
            plots=tmp_path / f"{name}_plots",
        )
        return torch.load(out, weights_only=False)

    return tmp_path, run


def test_train_wm_metrics(setup):
    tmp_path, run = setup
    ckpt = run("a", 3)
    metrics = json.loads((tmp_path / "a.json").read_text())
    for key in ("acc", "top5", "repeat_acc", "reward_mse", "done_precision", "done_recall"):
        assert f"wm/val/{key}" in metrics, key
    assert 0.0 <= metrics["wm/val/repeat_acc"] <= 1.0
    assert ckpt["epoch"] == 3 and len(ckpt["history"]) == 3
    assert (tmp_path / "a_plots" / "history.csv").read_text().count("\n") == 4


def test_resume_equals_uninterrupted(setup):
    tmp_path, run = setup
    full = run("full", 2)
    run("part", 1)
    resumed = run("part", 2)  # more epochs: continues from the 1-epoch checkpoint
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert (tmp_path / "full.json").read_bytes() == (tmp_path / "part.json").read_bytes()


def test_levels_mismatch_is_a_clear_error(setup):
    tmp_path, run = setup
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


def test_equal_runs_write_identical_checkpoints(setup):
    tmp_path, run = setup
    run("x", 1)
    run("y", 1)
    assert (tmp_path / "x.pt").read_bytes() == (tmp_path / "y.pt").read_bytes()  # DVC sees the same output
