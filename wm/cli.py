"""What every stage CLI shares: the --params option and one-line errors instead of tracebacks."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

from wm.config import ConfigError, WorldModelAgentConfig, load_params
from wm.utils import WmError, seed_everything

P = ParamSpec("P")
R = TypeVar("R")

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="Parameters file (validated against wm.config).")]


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Print ConfigError/WmError as `error: ...` lines on stderr and exit 2, with no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, WmError) as err:
            for line in str(err).splitlines():
                print(f"error: {line}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


def load_config(params: Path) -> WorldModelAgentConfig:
    """Load params and seed every RNG from them: the first two lines of every stage."""
    cfg = load_params(params)
    seed_everything(cfg.seed)
    return cfg


def run(fn: Callable[..., object]) -> None:
    """Entry point of a stage module: a single-command typer app with friendly errors."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(help=fn.__doc__)(user_errors(fn))
    app()
