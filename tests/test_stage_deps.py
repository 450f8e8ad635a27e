"""dvc.yaml's deps of each stage cover every project file the stage runs (its import closure), so that
`dvc status` reports a stage as changed when any code it runs changes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from wm.provenance import closure, code_hash

from .conftest import REPO

spec = importlib.util.spec_from_file_location("stage_deps", REPO / "tools" / "stage_deps.py")
stage_deps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stage_deps)
STAGES = stage_deps.stage_scripts()


def test_every_stage_is_checked():
    assert set(STAGES) == {"collect", "train_vae", "encode", "train_wm", "train_ctrl", "evaluate"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_deps_cover_the_code_a_stage_runs(stage):
    script, deps = STAGES[stage]
    missing = stage_deps.missing_deps(script, deps)
    assert not missing, f"dvc.yaml: stage {stage} runs {[str(m) for m in missing]} but its deps omit them"


def test_closure_follows_lazy_imports_and_parent_packages(tmp_path, monkeypatch):
    """A module imported inside a function counts (stages import lazily), and so does every package
    __init__ on the way; an import under `if TYPE_CHECKING:` does not (it never runs)."""
    pkg = tmp_path / "wm_probe"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "lazy.py").write_text("X = 1\n")
    (pkg / "typing_only.py").write_text("Y = 1\n")
    (pkg / "main.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import wm_probe.typing_only\n"
        "def f():\n    from wm_probe.sub.lazy import X\n    return X\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("wm.provenance.PACKAGES", ("wm_probe",))
    found = {p.relative_to(tmp_path).as_posix() for p in closure(pkg / "main.py")}
    assert found == {"wm_probe/__init__.py", "wm_probe/main.py", "wm_probe/sub/__init__.py", "wm_probe/sub/lazy.py"}


def test_check_names_a_missing_dep(tmp_path):
    """The check itself fails when a file is left out (dvc.yaml once omitted wm/models/fsq.py for train_wm)."""
    script, deps = STAGES["train_wm"]
    fewer = [d for d in deps if d != "wm/models/fsq.py"]
    assert fewer != deps
    assert Path("wm/models/fsq.py") in stage_deps.missing_deps(script, fewer)


def test_code_hash_changes_with_any_file_in_the_closure(tmp_path, monkeypatch):
    pkg = tmp_path / "wm_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import wm_probe.b\n")
    (pkg / "b.py").write_text("LR = 1e-3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("wm.provenance.PACKAGES", ("wm_probe",))
    for name in [m for m in sys.modules if m.startswith("wm_probe")]:
        monkeypatch.delitem(sys.modules, name)
    before = code_hash("wm_probe.a")
    (pkg / "b.py").write_text("LR = 2e-3\n")
    assert code_hash("wm_probe.a") != before
