"""End to end: `dvc repro` of the real dvc.yaml on a tiny params file, in a temporary git repo."""

import json

import pytest

from .conftest import run_cli, tiny_params

pytestmark = pytest.mark.slow


def test_dvc_repro_then_status_clean_and_metrics(project_copy):
    root = project_copy(tiny_params())
    run_cli(["dvc", "repro", "-q"], root)
    assert (root / "data" / "rollouts.h5").is_file()
    assert (root / "data" / "tokens.h5").is_file()
    status = run_cli(["dvc", "status"], root).stdout
    assert "changed" not in status and "modified" not in status, status
    shown = json.loads(run_cli(["dvc", "metrics", "show", "--json"], root).stdout)
    flat = json.dumps(shown)
    for key in ("collect/data/steps", "vae/val/psnr", "encode/all/usage"):
        assert key in flat, key

    # a list override through `dvc exp run -S` reaches the encoder: 8*6*5 = 240 codes, 3-d codes
    run_cli(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], root)
    run_cli(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro"], root)
    run_cli(["dvc", "exp", "run", "-q", "-S", "fsq.levels=[8,6,5]"], root)
    import h5py

    with h5py.File(root / "data" / "tokens.h5") as f:
        assert json.loads(f.attrs["levels"]) == [8, 6, 5]
        assert f["codes"].shape[1] == 3 and f["tokens"][:].max() < 240
    diff = run_cli(["dvc", "metrics", "diff", "--json"], root).stdout
    assert "vae/val/psnr" in diff


def test_full_pipeline_reports_the_real_score(project_copy):
    """Every stage, both controller training modes; `dvc metrics show` lists the real-game score."""
    root = project_copy(tiny_params(ctrl={"train_in": "dream"}))
    run_cli(["dvc", "repro", "-q"], root)
    shown = run_cli(["dvc", "metrics", "show"], root).stdout
    for key in ("eval/real/return_mean", "eval/random/return_mean", "eval/dream/return_mean", "wm/val/acc"):
        assert key in shown, key
    assert (root / "videos" / "episode.gif").is_file()
    assert "changed" not in run_cli(["dvc", "status"], root).stdout
