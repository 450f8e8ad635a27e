"""The `wm` console command (pyproject entry point): the pipeline stages as subcommands, plus `play`."""

from __future__ import annotations

import importlib

import typer

from wm.cli import user_errors
from wm.interrupt import install_sticky_interrupt

# The stages in pipeline order: subcommand name -> module in stages/ (what `dvc repro` runs).
STAGES = {
    "collect": "stages.collect",
    "train-vae": "stages.train_vae",
    "encode": "stages.encode",
    "train-wm": "stages.train_wm",
    "train-ctrl": "stages.train_ctrl",
    "evaluate": "stages.evaluate",
}


def main() -> None:
    install_sticky_interrupt()
    app = typer.Typer(
        add_completion=False,
        pretty_exceptions_enable=False,
        no_args_is_help=True,
        help="World Models for CarRacing-v3: the pipeline stages (what `dvc repro` runs) and `play`.",
    )
    for name, module in STAGES.items():
        fn = importlib.import_module(module).main
        app.command(name, help=fn.__doc__)(user_errors(fn))
    from wm.play import play_command

    app.command("play", help=play_command.__doc__)(user_errors(play_command))
    app()
