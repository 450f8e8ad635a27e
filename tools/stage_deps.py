"""The project files each DVC stage runs (wm/provenance.py), against the deps that dvc.yaml lists.

    python tools/stage_deps.py            # print each stage's code deps, ready to paste into dvc.yaml
    python tools/stage_deps.py --check    # exit 1 naming every file a stage runs that its deps miss

A stage whose deps miss a file it runs stays "up to date" in `dvc status` after that file changes, and its
outputs go stale. tests/test_stage_deps.py runs the check.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wm.provenance import closure, module_file  # noqa: E402 - after making the repo importable


def stage_scripts(dvc_yaml: Path = REPO / "dvc.yaml") -> dict[str, tuple[Path, list[str]]]:
    """stage name -> (its script, its declared deps) for every stage whose cmd runs `python -m stages.X`."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        module = stage["cmd"].split("python -m ", 1)[1].split()[0]
        out[name] = (module_file(module), [str(d) for d in stage.get("deps", [])])
    return out


def code_deps(script: Path) -> list[Path]:
    return sorted(p.relative_to(REPO) for p in closure(script))


def missing_deps(script: Path, deps: list[str]) -> list[Path]:
    """Files in the script's import closure that no dep (the file, or a folder above it) covers."""
    declared = [Path(d) for d in deps]
    return [f for f in code_deps(script) if not any(f == d or d in f.parents for d in declared)]


def main() -> int:
    problems = 0
    for name, (script, deps) in stage_scripts().items():
        if "--check" in sys.argv:
            for f in missing_deps(script, deps):
                print(f"dvc.yaml: stage {name} runs {f} but its deps do not list it")
                problems += 1
        else:
            print(f"{name}:\n" + "".join(f"      - {f}\n" for f in code_deps(script)), end="")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
