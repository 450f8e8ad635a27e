"""requirements.lock and requirements-cuda.txt, offline: exact pins only, no local version labels (+cpu: PyPI
never serves them, so a new user's `pip install -r requirements.lock` failed), and every requirement of
pyproject.toml pinned. `python tools/lock.py --check` does the full resolution against PyPI."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
CUDA = REPO / "requirements-cuda.txt"
INCLUDE = "-c requirements-cuda.txt"
PIN = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==(\S+)$")


def normalize(name: str) -> str:
    """PEP 503."""
    return re.sub(r"[-_.]+", "-", name).lower()


def entries(path: Path) -> list[str]:
    """The non-blank, non-comment lines."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def pins(path: Path) -> dict[str, str]:
    """{normalised name: version} of the exact pins."""
    return {normalize(m[1]): m[2] for m in map(PIN.match, entries(path)) if m}


def project_requirement_names() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {normalize(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r.strip())[0]) for r in requirements}


@pytest.mark.parametrize("path", [LOCK, CUDA], ids=lambda p: p.name)
def test_no_local_version_labels(path):
    labelled = [line for line in entries(path) if "+" in line]
    assert not labelled, f"{path.name}: local version labels, which PyPI never serves: {labelled}"


@pytest.mark.parametrize("path", [LOCK, CUDA], ids=lambda p: p.name)
def test_every_line_is_an_exact_pin(path):
    allowed = {INCLUDE} if path == LOCK else set()
    loose = [line for line in entries(path) if line not in allowed and not PIN.match(line)]
    assert not loose, f"{path.name}: not exact name==version pins: {loose}"


def test_lock_includes_the_cuda_constraints_once():
    assert entries(LOCK).count(INCLUDE) == 1, f"{LOCK.name} must include {CUDA.name} with one '{INCLUDE}' line"


def test_no_package_is_pinned_twice():
    for path in (LOCK, CUDA):
        names = [normalize(m[1]) for m in map(PIN.match, entries(path)) if m]
        twice = sorted({name for name in names if names.count(name) > 1})
        assert not twice, f"{path.name}: pinned twice: {twice}"
    both = set(pins(LOCK)) & set(pins(CUDA))
    assert not both, f"pinned in both files: {sorted(both)}"


def test_lock_pins_every_project_requirement():
    missing = project_requirement_names() - set(pins(LOCK))
    assert not missing, f"{LOCK.name} has no pin for these requirements of pyproject.toml: {sorted(missing)}"
