"""Stage `train_wm`: the token world model on windows of data/tokens.h5 -> models/wm.pt."""

from pathlib import Path

from wm.cli import MetricsOut, ModelOut, ParamsOption, PlotsOut, TokensIn, load_config, run


def main(
    params: ParamsOption = Path("params.yaml"),
    data: TokensIn = Path("data/tokens.h5"),
    out: ModelOut = Path("models/wm.pt"),
    metrics: MetricsOut = Path("metrics/wm.json"),
    plots: PlotsOut = Path("plots/wm"),
) -> None:
    """Train the LSTM over FSQ tokens (next token, reward, done) on windows cut within episodes."""
    cfg = load_config(params)  # before the heavy imports: a bad params file answers at once

    from wm.models.world_model import WorldModel
    from wm.trainers.world_model import WorldModelTrainer

    trainer = WorldModelTrainer(WorldModel(cfg.world_model), vae=None, config=cfg)
    trainer.fit(data, metrics=metrics, plots=plots)
    trainer.publish(out)


if __name__ == "__main__":
    run(main)
