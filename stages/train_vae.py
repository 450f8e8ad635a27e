"""Stage `train_vae`: the FSQ-VAE on the frames of data/rollouts.h5 -> models/vae.pt."""

from pathlib import Path

from wm.cli import MetricsOut, ModelOut, ParamsOption, PlotsOut, RolloutsIn, load_config, run


def main(
    params: ParamsOption = Path("params.yaml"),
    data: RolloutsIn = Path("data/rollouts.h5"),
    out: ModelOut = Path("models/vae.pt"),
    metrics: MetricsOut = Path("metrics/vae.json"),
    plots: PlotsOut = Path("plots/vae"),
) -> None:
    """Train the FSQ-VAE (AdamW, validation split by episode, resumable every epoch)."""
    cfg = load_config(params)  # before the heavy imports: a bad params file answers at once

    from wm.models.fsq_vae import FSQVAE
    from wm.trainers.vae import VAETrainer

    trainer = VAETrainer(FSQVAE(cfg.fsq_vae), cfg)
    trainer.fit(data, metrics=metrics, plots=plots)
    trainer.publish(out)


if __name__ == "__main__":
    run(main)
