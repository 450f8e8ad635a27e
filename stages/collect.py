"""Stage `collect`: random-policy rollouts of CarRacing-v3 -> data/rollouts.h5."""

from pathlib import Path
from typing import Annotated

import typer

from wm.cli import MetricsOut, ParamsOption, load_config, run


def main(
    params: ParamsOption = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="Output HDF5 file.")] = Path("data/rollouts.h5"),
    metrics: MetricsOut = Path("metrics/collect.json"),
) -> None:
    """Record `collect.episodes` episodes of the correlated random policy (parallel, seeded per episode)."""
    cfg = load_config(params)  # before the heavy imports: a bad params file answers at once

    from wm.collect import DataCollector
    from wm.files import write_json

    collector = DataCollector(cfg)
    summary = collector.collect(out, progress=collector.runtime.progress)
    write_json(metrics, summary)
    print(
        f"collect: {summary['collect/data/episodes']} episodes, {summary['collect/data/steps']} steps "
        f"at {collector.steps_per_s:.0f} steps/s with {collector.workers} workers; random-policy "
        f"return {summary['collect/data/return_mean']:.1f} ± {summary['collect/data/return_std']:.1f} -> {out}"
    )


if __name__ == "__main__":
    run(main)
