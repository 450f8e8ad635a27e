"""Stage `evaluate`: the controller in the REAL CarRacing-v3 on unseen tracks, the random baseline on the
same tracks, the controller's dream return beside it, and a video."""

from pathlib import Path
from typing import Annotated

import typer

from wm.cli import (
    ControllerIn,
    MetricsOut,
    ParamsOption,
    PlotsOut,
    TokensIn,
    VaeIn,
    WorldModelIn,
    load_config,
    run,
)


def main(
    params: ParamsOption = Path("params.yaml"),
    tokens: TokensIn = Path("data/tokens.h5"),
    vae: VaeIn = Path("models/vae.pt"),
    world_model: WorldModelIn = Path("models/wm.pt"),
    controller: ControllerIn = Path("models/controller.pt"),
    metrics: MetricsOut = Path("metrics/eval.json"),
    plots: PlotsOut = Path("plots/eval"),
    videos: Annotated[Path, typer.Option(help="Folder for episode.gif (real frames beside reconstructions).")] = Path(
        "videos"
    ),
) -> None:
    """Score the controller in the real game (parallel episodes), beside the random policy and the dream."""
    cfg = load_config(params)  # before the heavy imports: a bad params file answers at once

    import torch

    from wm.agent import AgentModels
    from wm.config import ctrl_fingerprint, vae_fingerprint, wm_fingerprint
    from wm.datafiles import load_tokens
    from wm.dream import make_dream
    from wm.episodes import init_worker
    from wm.evaluate import beside_reconstructions, evaluate_real, save_gif
    from wm.files import write_csv, write_json
    from wm.models.controller import EvolutionaryController
    from wm.models.fsq_vae import FSQVAE
    from wm.models.world_model import WorldModel
    from wm.parallel import WorkerPool
    from wm.runtime import load_runtime, resolve_device
    from wm.seeding import Stream, int_seed

    runtime, e = load_runtime(), cfg.eval
    vae_model = FSQVAE.from_file(vae, vae_fingerprint(cfg))
    wm_model = WorldModel.from_file(world_model, wm_fingerprint(cfg))
    ctrl = EvolutionaryController.from_file(controller, ctrl_fingerprint(cfg))
    record = e.video_steps if e.video else 0
    models = AgentModels.of(vae_model, cfg.controller, wm_model)
    with WorkerPool(min(runtime.num_workers, 2 * e.episodes), init_worker, (cfg, runtime.fast_env, models)) as pool:
        summary, rows, episode = evaluate_real(pool, ctrl.params.numpy(), e.episodes, e.max_steps, record)

    # The same controller in the dream, same horizon: the gap to the real score is the model's exploitability.
    dream = make_dream(wm_model.to(resolve_device(cfg.device)), load_tokens(tokens), cfg.ctrl.temperature, e.max_steps)
    seed = int_seed(cfg.seed, Stream.EVAL_DREAM)
    returns = dream.evaluate_candidates(ctrl.spec, ctrl.params[None], e.episodes, seed)
    summary["eval/dream/return_mean"] = float(returns[0])

    write_json(metrics, summary)
    write_csv(plots / "returns.csv", rows)
    videos.mkdir(parents=True, exist_ok=True)  # the folder is the stage's output, with or without a video
    if record:
        with torch.no_grad():
            save_gif(beside_reconstructions(vae_model, episode.frames), videos / "episode.gif")
    else:
        (videos / "episode.gif").unlink(missing_ok=True)  # never leave a video of another run
    print(
        f"evaluate: real {summary['eval/real/return_mean']:.1f} ± {summary['eval/real/return_std']:.1f} "
        f"over {e.episodes} unseen tracks (random policy {summary['eval/random/return_mean']:.1f} ± "
        f"{summary['eval/random/return_std']:.1f}; dream {summary['eval/dream/return_mean']:.1f})"
    )


if __name__ == "__main__":
    run(main)
