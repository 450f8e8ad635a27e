import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wm.config import ConfigError, WorldModelAgentConfig, load_params, parse_params

from .conftest import REPO


def _errors(data) -> str:
    with pytest.raises(ConfigError) as info:
        parse_params(data)
    return str(info.value)


def test_repo_params_load_and_list_every_field():
    cfg = load_params(REPO / "params.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())

    def keys(d, prefix=""):
        return {f"{prefix}{k}" for k, v in d.items()} | {
            x for k, v in d.items() if isinstance(v, dict) for x in keys(v, f"{prefix}{k}.")
        }

    # every knob is visible to users in params.yaml (dvc exp show lists what the file holds)
    assert keys(raw) == keys(cfg.model_dump(mode="json"))
    assert cfg.fsq.codebook_size == 1000 and cfg.fsq.dim == 4


def test_derived_values_follow_levels():
    cfg = parse_params({"fsq": {"levels": [8, 6, 5]}})
    assert cfg.fsq.codebook_size == 240 and cfg.fsq.dim == 3


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"vae": {"epochs": 1, "epoch": 2}}, "vae.epoch: unknown key"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"vae": {"epochs": "many"}}, "vae.epochs: Input should be a valid integer"),
        ({"fsq": {"levels": [8, 1, 5]}}, "fsq.levels.1: Input should be greater than or equal to 2"),
        ({"fsq": {"levels": []}}, "fsq.levels: List should have at least 1 item"),
        ({"fsq": {"levels": "8,5"}}, "fsq.levels: Input should be a valid list"),
        ({"ctrl": {"train_in": "both"}}, "ctrl.train_in: Input should be 'dream' or 'real'"),
        ({"collect": {"policy": {"hold_min": 9, "hold_max": 3}}}, "collect.policy: Value error, hold_min (9)"),
        ({"collect": {"episodes": 0}}, "collect.episodes: Input should be greater than or equal to 1"),
    ],
)
def test_bad_values_name_the_key_path(data, key):
    assert key in _errors(data)


def test_every_problem_is_reported_one_per_line():
    lines = _errors({"seed": -1, "wm": {"hidden": 0}, "eval": {"x": 1}}).splitlines()
    assert sorted(line.split(":")[0] for line in lines) == ["eval.x", "seed", "wm.hidden"]


def test_model_is_frozen():
    cfg = WorldModelAgentConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.seed = 3


def _run_stage(tmp_path: Path, text: str | None) -> subprocess.CompletedProcess:
    params = tmp_path / "params.yaml"
    if text is not None:
        params.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "stages.collect", "--params", str(params), "--out", str(tmp_path / "r.h5")]
        + ["--metrics", str(tmp_path / "collect.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fsq:\n  levels: [8, 1, 5]\n", "error: {p}: fsq.levels.1: Input should be greater than or equal to 2"),
        ("collect:\n  episodez: 3\n", "error: {p}: collect.episodez: unknown key"),
        ("collect: [1, 2\n", "error: {p}: malformed YAML at line 2"),
        (None, "error: {p}: params file not found"),
        ("- 1\n- 2\n", "error: {p}: params must be a mapping"),
    ],
)
def test_stage_cli_prints_one_line_and_exits_2(tmp_path, text, expected):
    proc = _run_stage(tmp_path, text)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected.format(p=tmp_path / "params.yaml")), lines
    assert not (tmp_path / "r.h5").exists()


def test_full_scale_params_are_valid_and_complete():
    full = yaml.safe_load((REPO / "params-full.yaml").read_text())
    default = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg = load_params(REPO / "params-full.yaml")
    assert cfg.collect.episodes == 10_000 and cfg.vae.epochs == 50
    assert full.keys() == default.keys() and all(
        full[k].keys() == default[k].keys() for k in full if isinstance(full[k], dict)
    )
