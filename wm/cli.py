"""What every stage script shares: the typer options, one-line errors instead of tracebacks, config loading.

Stage scripts import their heavy modules inside `main`, so `--help` and a bad params file answer at once, and
each stage's DVC deps (the files it imports, tools/stage_deps.py) stay those it really runs.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

from wm.config import WorldModelAgentConfig, load_params
from wm.errors import WmError
from wm.interrupt import install_sticky_interrupt, interrupting_signal

P = ParamSpec("P")
R = TypeVar("R")

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="Parameters file (validated against wm.config).")]
# Inputs and outputs shared by several stages (their defaults are the paths in dvc.yaml).
RolloutsIn = Annotated[Path, typer.Option(help="Rollouts from the collect stage.")]
TokensIn = Annotated[Path, typer.Option(help="Tokens from the encode stage.")]
VaeIn = Annotated[Path, typer.Option(help="Trained FSQ-VAE (weights-only model file).")]
WorldModelIn = Annotated[Path, typer.Option(help="Trained world model (weights-only model file).")]
ControllerIn = Annotated[Path, typer.Option(help="Trained controller (weights-only model file).")]
ModelOut = Annotated[Path, typer.Option(help="Weights-only model file (its resume checkpoint lives in WM_CACHE_DIR).")]
MetricsOut = Annotated[Path, typer.Option(help="Metrics file (JSON), tracked by `dvc metrics`.")]
PlotsOut = Annotated[Path, typer.Option(help="Folder of plot data, drawn by `dvc plots`.")]


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Print WmError (ConfigError included) as `error: ...` lines on stderr and exit 2 (Ctrl-C or SIGTERM: one
    line, exit 128 + the signal's number as a shell reports it: 130, 143), with no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except WmError as err:
            for line in str(err).splitlines():
                print(f"error: {line}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            # Outputs are written atomically and training resumes from its resume checkpoint.
            sig = interrupting_signal()
            print(
                f"interrupted ({sig.name}): no partial output was kept; rerun to resume from the last checkpoint",
                file=sys.stderr,
            )
            raise SystemExit(128 + sig.value) from None

    return wrapper


def load_config(params: Path) -> WorldModelAgentConfig:
    """The first line of every stage: validate params and the runtime settings, seed every RNG."""
    from wm.runtime import load_runtime
    from wm.seeding import seed_everything

    cfg = load_params(params)
    load_runtime()
    seed_everything(cfg.seed)
    return cfg


def run(fn: Callable[..., object]) -> None:
    """Entry point of a stage module: a single-command typer app with friendly errors."""
    install_sticky_interrupt()
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(help=fn.__doc__)(user_errors(fn))
    app()
