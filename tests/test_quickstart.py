"""The Python API as users meet it: the README's snippet and examples/quickstart.py, run as written."""

from __future__ import annotations

import re
import sys

import pytest

from .conftest import REPO, run_cli


def readme_api_snippet() -> str:
    """The first ```python block under the README's "Python API" heading."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_api_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_api_snippet(), "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    for name in ("vae", "world_model", "controller", "vae_trainer", "wm_trainer", "ctrl_trainer"):
        assert name in namespace, name


@pytest.mark.slow
def test_quickstart_trains_and_drives(tmp_path):
    proc = run_cli([sys.executable, str(REPO / "examples" / "quickstart.py"), "--out", str(tmp_path / "run")], tmp_path)
    assert "return on track 7 in 100 steps" in proc.stdout, proc.stdout
    for name in ("vae.pt", "wm.pt", "controller.pt"):
        assert (tmp_path / "run" / "agent" / name).is_file()
