import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wm.checkpoints import fingerprint_changes
from wm.config import (
    ControllerConfig,
    FSQVAEConfig,
    WorldModelAgentConfig,
    WorldModelConfig,
    collect_fingerprint,
    ctrl_fingerprint,
    load_params,
    parse_params,
    vae_fingerprint,
    wm_fingerprint,
)
from wm.errors import ConfigError, WmError
from wm.runtime import LOCAL_ENV, RuntimeSettings, available_cores, load_runtime

from .conftest import REPO

# Runtime settings (wm/runtime.py) that used to be params: they change how fast a stage runs, never its
# outputs, so they must not be DVC params (a change would rerun the stage).
REMOVED_KEYS = ["collect.workers", "ctrl.workers", "eval.workers", "env.fast", "vae.load_limit_gb"]


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
    # ...and no runtime setting is among them
    assert not set(REMOVED_KEYS) & keys(raw)
    assert not {f"{section}.{name}" for section in raw for name in RuntimeSettings.model_fields} & keys(raw)


def test_config_bundles_are_the_sections_of_the_params():
    cfg = parse_params({"fsq": {"levels": [8, 6, 5]}, "vae": {"epochs": 7}, "wm": {"hidden": 12}})
    assert cfg.fsq_vae == FSQVAEConfig(fsq=cfg.fsq, vae=cfg.vae)
    assert cfg.world_model == WorldModelConfig(wm=cfg.wm, fsq=cfg.fsq)
    assert cfg.controller == ControllerConfig(ctrl=cfg.ctrl, fsq=cfg.fsq, wm=cfg.wm)
    assert cfg.world_model.wm.hidden == 12 and cfg.fsq_vae.fsq.codebook_size == 240


def test_fingerprints_hold_every_param_that_determines_the_output():
    """Each stage's fingerprint: its inputs' params and its own section, its own length included (a longer
    run publishes another model); nothing that does not change the output (encode, eval)."""
    cfg = parse_params({})
    fingerprints = [collect_fingerprint, vae_fingerprint, wm_fingerprint, ctrl_fingerprint]
    sections = [{"seed", "env", "collect"}, {"fsq", "vae"}, {"wm"}, {"ctrl", "iterate"}]
    for i, fingerprint in enumerate(fingerprints):
        assert set(fingerprint(cfg)) == set().union(*sections[: i + 1]), fingerprint.__name__
    full = cfg.model_dump(mode="json")
    assert ctrl_fingerprint(cfg) == {k: v for k, v in full.items() if k not in ("device", "encode", "eval")}

    def changes(overrides: dict) -> list[list[str]]:
        other = parse_params(overrides)
        return [fingerprint_changes(f(cfg), f(other)) for f in fingerprints]

    assert changes({"collect": {"episodes": 3}}) == [["collect.episodes"]] * 4
    assert changes({"vae": {"epochs": 9}}) == [[], ["vae.epochs"], ["vae.epochs"], ["vae.epochs"]]
    assert changes({"wm": {"epochs": 9}}) == [[], [], ["wm.epochs"], ["wm.epochs"]]
    assert changes({"ctrl": {"generations": 9}}) == [[], [], [], ["ctrl.generations"]]
    assert changes({"encode": {"batch_size": 7}, "eval": {"episodes": 3}, "device": "cpu"}) == [[]] * 4


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
        ({"collect": {"policy": {"hold_min": 9, "hold_max": 3}}}, "collect.policy: hold_min (9)"),
        ({"collect": {"episodes": 0}}, "collect.episodes: Input should be greater than or equal to 1"),
    ],
)
def test_bad_values_name_the_key_path(data, key):
    assert key in _errors(data)


@pytest.mark.parametrize("key", REMOVED_KEYS)
def test_runtime_settings_are_no_longer_params(key):
    section, name = key.split(".")
    assert f"{key}: unknown key" in _errors({section: {name: 1}})


def test_config_error_is_a_wm_error():
    """Stages print every WmError as one line; a ConfigError is one."""
    assert issubclass(ConfigError, WmError)
    with pytest.raises(WmError, match="bogus: unknown key"):
        parse_params({"bogus": 1})


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


# ------------------------------------------------------------------------------------------ runtime settings


@pytest.fixture
def runtime_env(tmp_path, monkeypatch):
    """A working directory without local.env, and no WM_* setting in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.upper().startswith("WM_"):
            monkeypatch.delenv(name)
    load_runtime.cache_clear()
    return tmp_path


def test_runtime_defaults(runtime_env):
    rt = RuntimeSettings()
    assert (rt.workers, rt.load_limit_gb, rt.fast_env, rt.cache_dir, rt.progress) == (
        0,
        8.0,
        True,
        Path(".cache/wm"),
        True,
    )
    assert rt.num_workers == available_cores() >= 1


def test_runtime_settings_from_the_environment(runtime_env, monkeypatch):
    monkeypatch.setenv("WM_WORKERS", "3")
    monkeypatch.setenv("WM_LOAD_LIMIT_GB", "0.5")
    monkeypatch.setenv("WM_FAST_ENV", "false")
    monkeypatch.setenv("WM_CACHE_DIR", str(runtime_env / "cache"))
    monkeypatch.setenv("WM_PROGRESS", "0")
    rt = load_runtime()
    assert (rt.workers, rt.num_workers, rt.load_limit_gb) == (3, 3, 0.5)
    assert rt.fast_env is False and rt.progress is False and rt.cache_dir == runtime_env / "cache"
    assert load_runtime() is rt  # read once per process
    for auto in ("auto", "AUTO", " auto ", "0"):
        monkeypatch.setenv("WM_WORKERS", auto)
        assert RuntimeSettings().workers == 0 and RuntimeSettings().num_workers == available_cores(), auto


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("WM_WORKERS", "many", "WM_WORKERS (environment or local.env): Input should be a valid integer"),
        ("WM_WORKERS", "-1", "WM_WORKERS (environment or local.env): Input should be greater than or equal to 0"),
        ("WM_LOAD_LIMIT_GB", "lots", "WM_LOAD_LIMIT_GB (environment or local.env): Input should be a valid number"),
        ("WM_PROGRESS", "maybe", "WM_PROGRESS (environment or local.env): Input should be a valid boolean"),
    ],
)
def test_bad_runtime_setting_is_a_wm_error_naming_the_variable(runtime_env, monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(WmError) as info:
        load_runtime()
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize("line", ["WM_BOGUS=1", "BOGUS=1"])
def test_unknown_key_in_local_env_is_an_error(runtime_env, line):
    (runtime_env / LOCAL_ENV).write_text(line + "\n")
    with pytest.raises(WmError, match=r"^WM_BOGUS \(environment or local\.env\): unknown setting$"):
        load_runtime()


def test_local_env_sets_runtime_settings(runtime_env, monkeypatch):
    """local.env holds the environment's `WM_NAME=value` lines (wm/runtime.py); the environment wins."""
    (runtime_env / LOCAL_ENV).write_text("WM_WORKERS=3\nWM_LOAD_LIMIT_GB=0.5\n")
    rt = load_runtime()
    assert (rt.workers, rt.load_limit_gb) == (3, 0.5)
    monkeypatch.setenv("WM_WORKERS", "auto")
    assert RuntimeSettings().workers == 0 and RuntimeSettings().load_limit_gb == 0.5


def test_code_defaults_are_the_repository_params():
    """`WorldModelAgentConfig()` (what the Python API calls "the defaults") is exactly params.yaml."""
    assert WorldModelAgentConfig() == load_params(REPO / "params.yaml")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ctrl": {"dream_dropout": True}}, "ctrl.dream_dropout needs a world model trained with dropout"),
        ({"ctrl": {"train_in": "real"}}, "iterate.rounds > 0 retrains the controller in the dream"),
        ({"eval": {"fidelity_panel": 2}}, "eval: fidelity_panel must be 0 (off) or at least 3"),
    ],
)
def test_checks_across_keys(data, message):
    assert message in _errors(data)
    assert not _errors(data).startswith("<root>")  # a check across sections names its keys itself


def test_real_training_without_rounds_and_dream_dropout_with_dropout_are_valid():
    parse_params({"ctrl": {"train_in": "real"}, "iterate": {"rounds": 0}})
    parse_params({"ctrl": {"dream_dropout": True}, "wm": {"dropout": 0.1}})
