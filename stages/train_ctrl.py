"""Stage `train_ctrl`: CMA-ES on the controller, in the dream (with iterative rounds) or the real game, or the
actor-critic in imagination (`ctrl.optimizer`) ->
models/agent/ (the trained agent: vae.pt, wm.pt, controller.pt) and data/rounds/ (the rounds' episodes)."""

from pathlib import Path
from typing import Annotated

import typer

from wm.cli import MetricsOut, ParamsOption, PlotsOut, TokensIn, VaeIn, WorldModelIn, load_config, run


def main(
    params: ParamsOption = Path("params.yaml"),
    tokens: TokensIn = Path("data/tokens.h5"),
    vae: VaeIn = Path("models/vae.pt"),
    world_model: WorldModelIn = Path("models/wm.pt"),
    agent: Annotated[Path, typer.Option(help="Folder for the trained agent (weights-only model files).")] = Path(
        "models/agent"
    ),
    rounds: Annotated[Path, typer.Option(help="Folder for the episodes collected in the rounds.")] = Path(
        "data/rounds"
    ),
    metrics: MetricsOut = Path("metrics/ctrl.json"),
    plots: PlotsOut = Path("plots/ctrl"),
) -> None:
    """Optimise the controller with CMA-ES (`ctrl.train_in`: dream or real) or the actor-critic in imagination
    (`ctrl.optimizer`), with `iterate.rounds` rounds of collect -> retrain world model -> retrain controller in
    the dream; resumable every generation (or measurement) and round."""
    cfg = load_config(params)  # before the heavy imports: a bad params file answers at once

    from wm.config import vae_fingerprint, wm_fingerprint
    from wm.datafiles import write_tokens
    from wm.models.fsq_vae import FSQVAE
    from wm.models.world_model import WorldModel
    from wm.trainers.controller import ControllerTrainer

    trainer = ControllerTrainer(
        FSQVAE.from_file(vae, vae_fingerprint(cfg)), WorldModel.from_file(world_model, wm_fingerprint(cfg)), cfg
    )
    trainer.fit(tokens, metrics=metrics, plots=plots)
    trainer.publish(agent)
    rounds.mkdir(parents=True, exist_ok=True)  # the folder is the output, empty without rounds
    collected = trainer.round_tokens()
    if collected is not None:
        write_tokens(
            rounds / "tokens.h5", collected.tokens, collected.codes, collected.steps, {"levels": cfg.fsq.levels}
        )
    else:
        (rounds / "tokens.h5").unlink(missing_ok=True)  # never leave another run's rounds
    print(f"ctrl: {trainer.real_steps} real-game steps used for training -> {agent}")


if __name__ == "__main__":
    run(main)
