"""Stage `encode`: every frame of data/rollouts.h5 -> its FSQ token and code in data/tokens.h5."""

from pathlib import Path
from typing import Annotated

import typer

from wm.cli import MetricsOut, ParamsOption, RolloutsIn, VaeIn, load_config, run


def main(
    params: ParamsOption = Path("params.yaml"),
    data: RolloutsIn = Path("data/rollouts.h5"),
    vae: VaeIn = Path("models/vae.pt"),
    out: Annotated[Path, typer.Option(help="Output HDF5 file of tokens.")] = Path("data/tokens.h5"),
    metrics: MetricsOut = Path("metrics/encode.json"),
) -> None:
    """Encode all frames in batches; tokens stay aligned with actions, rewards and done flags."""
    cfg = load_config(params)  # before the heavy imports: a bad params file answers at once

    from wm.config import vae_fingerprint
    from wm.encoding import encode_rollouts
    from wm.files import write_json
    from wm.models.fsq_vae import FSQVAE
    from wm.runtime import load_runtime, resolve_device

    model = FSQVAE.from_file(vae, vae_fingerprint(cfg)).to(resolve_device(cfg.device))
    summary = encode_rollouts(model, data, out, cfg.encode.batch_size, load_runtime().progress)
    write_json(metrics, summary)
    print(
        f"encode: {summary['encode/all/frames']} frames -> {out}; codebook usage {summary['encode/all/usage']:.1%}, "
        f"perplexity {summary['encode/all/perplexity']:.1f}"
    )


if __name__ == "__main__":
    run(main)
