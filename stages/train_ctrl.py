"""Stage `train_ctrl`: CMA-ES on the controller, fitness in the dream or the real game -> models/controller.pt."""

from pathlib import Path

from wm.cli import MetricsOut, ModelOut, ParamsOption, PlotsOut, TokensIn, VaeIn, WorldModelIn, load_config, run


def main(
    params: ParamsOption = Path("params.yaml"),
    tokens: TokensIn = Path("data/tokens.h5"),
    vae: VaeIn = Path("models/vae.pt"),
    world_model: WorldModelIn = Path("models/wm.pt"),
    out: ModelOut = Path("models/controller.pt"),
    metrics: MetricsOut = Path("metrics/ctrl.json"),
    plots: PlotsOut = Path("plots/ctrl"),
) -> None:
    """Optimise the controller with CMA-ES (`ctrl.train_in`: dream or real), resumable every generation."""
    cfg = load_config(params)  # before the heavy imports: a bad params file answers at once

    from wm.config import vae_fingerprint, wm_fingerprint
    from wm.models.fsq_vae import FSQVAE
    from wm.models.world_model import WorldModel
    from wm.trainers.controller import ControllerTrainer

    trainer = ControllerTrainer(
        FSQVAE.from_file(vae, vae_fingerprint(cfg)), WorldModel.from_file(world_model, wm_fingerprint(cfg)), cfg
    )
    trainer.fit(tokens, metrics=metrics, plots=plots)
    trainer.publish(out)


if __name__ == "__main__":
    run(main)
