"""Stage `collect`: random-policy rollouts of CarRacing-v3 -> data/rollouts.h5."""

from pathlib import Path
from typing import Annotated

import typer

from wm.cli import MetricsOut, ParamsOption, load_config, run
from wm.collect import collect
from wm.utils import write_json


def main(
    params: ParamsOption = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="Output HDF5 file.")] = Path("data/rollouts.h5"),
    metrics: MetricsOut = Path("metrics/collect.json"),
) -> None:
    """Record `collect.episodes` episodes of the correlated random policy (parallel, seeded per episode)."""
    cfg = load_config(params)
    summary, steps_per_s = collect(cfg, out)
    write_json(metrics, summary)
    print(
        f"collect: {summary['collect/data/episodes']} episodes, {summary['collect/data/steps']} steps "
        f"at {steps_per_s:.0f} steps/s with {cfg.collect.workers} workers; random-policy return "
        f"{summary['collect/data/return_mean']:.1f} ± {summary['collect/data/return_std']:.1f} -> {out}"
    )


if __name__ == "__main__":
    run(main)
