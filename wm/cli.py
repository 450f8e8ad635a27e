"""What every stage CLI shares: the --params option and one-line errors instead of tracebacks."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

from wm.config import ConfigError, WorldModelAgentConfig, load_params
from wm.utils import WmError, install_sticky_interrupt, seed_everything

P = ParamSpec("P")
R = TypeVar("R")

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="Parameters file (validated against wm.config).")]
# Inputs and outputs shared by several stages (their defaults are the paths in dvc.yaml).
RolloutsIn = Annotated[Path, typer.Option(help="Rollouts from the collect stage.")]
TokensIn = Annotated[Path, typer.Option(help="Tokens from the encode stage.")]
VaeIn = Annotated[Path, typer.Option(help="Trained FSQ-VAE checkpoint.")]
WorldModelIn = Annotated[Path, typer.Option(help="Trained world model checkpoint.")]
MetricsOut = Annotated[Path, typer.Option(help="Metrics file (JSON), tracked by `dvc metrics`.")]
PlotsOut = Annotated[Path, typer.Option(help="Folder of plot data, drawn by `dvc plots`.")]
CheckpointOut = Annotated[Path, typer.Option(help="Checkpoint, resumed when it was written under the same params.")]


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Print ConfigError/WmError as `error: ...` lines on stderr and exit 2 (Ctrl-C: one line, exit 130),
    with no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, WmError) as err:
            for line in str(err).splitlines():
                print(f"error: {line}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            # Outputs are written atomically and training checkpoints every epoch/generation.
            print("interrupted: no partial output was kept; rerun to resume from the last checkpoint", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper


def load_config(params: Path) -> WorldModelAgentConfig:
    """Load params and seed every RNG from them: the first two lines of every stage."""
    cfg = load_params(params)
    seed_everything(cfg.seed)
    return cfg


def run(fn: Callable[..., object]) -> None:
    """Entry point of a stage module: a single-command typer app with friendly errors."""
    install_sticky_interrupt()
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(help=fn.__doc__)(user_errors(fn))
    app()
