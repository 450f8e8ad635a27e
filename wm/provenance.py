"""Which project files a piece of code runs: the closure of its imports of `wm` and `stages` modules.

Two uses: tools/stage_deps.py checks that every DVC stage lists the files it runs in its deps, and resume
checkpoints are keyed by a hash of the training code (`code_hash`), so a changed model or loss never resumes
a run of the old code.

Every import statement counts, also those inside functions (stages import heavy modules lazily), except
those under `if TYPE_CHECKING:`, which never run. Importing `wm.x.y` runs `wm/__init__.py` and
`wm/x/__init__.py` first, so they belong to the closure of anything that imports below them.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path

PACKAGES = ("wm", "stages")


def module_file(name: str) -> Path | None:
    """The source file of a project module (a package's __init__.py), or None if there is none."""
    if name.split(".")[0] not in PACKAGES:
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent is not a package: `from wm.x import function`
        return None
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(tree: ast.AST) -> set[str]:
    """Dotted module names a file imports (for `from a import b`: a, and a.b in case b is a module)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def closure(path: Path) -> set[Path]:
    """Resolved paths of the project files that running the file at `path` may execute, itself included."""
    seen: set[Path] = set()
    todo = [Path(path).resolve()]
    folder = todo[0].parent
    while (folder / "__init__.py").is_file():  # `python -m pkg.mod` runs pkg/__init__.py first
        todo.append(folder / "__init__.py")
        folder = folder.parent
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imported_names(ast.parse(current.read_text(), str(current))):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # every parent package's __init__ runs first
                found = module_file(".".join(parts[:i]))
                if found is not None and found.resolve() not in seen:
                    todo.append(found.resolve())
    return seen


def code_hash(module: str) -> str:
    """sha256 (hex, 16 digits) of the sources in a module's closure, by package-relative path."""
    origin = module_file(module)
    assert origin is not None, f"{module} is not a project module"
    root = origin.resolve().parents[len(module.split(".")) - (origin.name != "__init__.py")]
    digest = hashlib.sha256()
    for file in sorted(closure(origin), key=lambda p: str(p.relative_to(root))):
        digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
