"""Stage `evaluate`: the trained agent in the REAL CarRacing-v3 on unseen tracks, the random baseline on the
same tracks, its dream return, the dream's fidelity (rank correlation with the game over a panel of
controllers), and a video: real frames beside their reconstructions and the dream under the same actions."""

from pathlib import Path
from typing import Annotated

import typer

from wm.cli import MetricsOut, ParamsOption, PlotsOut, TokensIn, load_config, run


def main(
    params: ParamsOption = Path("params.yaml"),
    tokens: TokensIn = Path("data/tokens.h5"),
    agent: Annotated[Path, typer.Option(help="Folder of the trained agent (train_ctrl's output).")] = Path(
        "models/agent"
    ),
    metrics: MetricsOut = Path("metrics/eval.json"),
    plots: PlotsOut = Path("plots/eval"),
    videos: Annotated[Path, typer.Option(help="Folder for episode.gif (real | reconstruction | dream).")] = Path(
        "videos"
    ),
) -> None:
    """Score the agent in the real game (parallel episodes), beside the random policy, the dream and its fidelity."""
    cfg = load_config(params)  # before the heavy imports: a bad params file answers at once

    import torch

    from wm.agent import AgentModels
    from wm.config import ctrl_fingerprint, vae_fingerprint, wm_fingerprint
    from wm.datafiles import load_tokens
    from wm.dream import ContextStarts, controller_dream
    from wm.episodes import init_worker
    from wm.evaluate import beside_reconstructions, dream_replay, evaluate_real, fidelity, save_gif
    from wm.fidelity import controller_panel
    from wm.files import write_csv, write_json
    from wm.models.controller import EvolutionaryController
    from wm.models.fsq_vae import FSQVAE
    from wm.models.world_model import WorldModel
    from wm.parallel import open_pool
    from wm.runtime import load_runtime
    from wm.seeding import Stream, int_seed

    runtime, e, c = load_runtime(), cfg.eval, cfg.ctrl
    data = load_tokens(tokens)
    vae = FSQVAE.from_file(agent / "vae.pt", vae_fingerprint(cfg))
    world_model = WorldModel.from_file(
        agent / "wm.pt", ctrl_fingerprint(cfg) if cfg.iterate.rounds else wm_fingerprint(cfg)
    )
    ctrl = EvolutionaryController.from_file(agent / "controller.pt", ctrl_fingerprint(cfg))
    record = e.video_steps if e.video else 0
    most = max(2 * e.episodes, e.fidelity_panel * e.fidelity_tracks)  # episodes played at once
    with open_pool(
        runtime, most, init_worker, (cfg, runtime.fast_env, AgentModels.of(vae, cfg.controller, world_model))
    ) as pool:
        summary, rows, episode = evaluate_real(
            pool, ctrl.params.numpy(), e.episodes, e.max_steps, record, runtime.progress, lockstep=c.lockstep
        )
        if e.fidelity_panel:
            panel = controller_panel(ctrl.params.numpy(), e.fidelity_panel, cfg.seed)
            panel_dream = controller_dream(world_model, ContextStarts(load_tokens(tokens)), c, e.fidelity_steps)
            seed = int_seed(cfg.seed, Stream.EVAL_DREAM, 1)
            panel_metrics, panel_rows = fidelity(
                pool, vae, panel_dream, ctrl.spec, panel, e.fidelity_tracks, seed, runtime.progress, lockstep=c.lockstep
            )
            summary |= {f"eval/fidelity/{k}": v for k, v in panel_metrics.items()}
            write_csv(plots / "fidelity.csv", panel_rows)

    # The same controller in the dream it was trained in, evaluation horizon: the gap to the real score is the
    # model's exploitability.
    dream = controller_dream(world_model, ContextStarts(data), c, e.max_steps)
    returns = dream.evaluate_candidates(ctrl.spec, ctrl.params[None], e.episodes, int_seed(cfg.seed, Stream.EVAL_DREAM))
    summary["eval/dream/return_mean"] = float(returns[0])

    write_json(metrics, summary)
    write_csv(plots / "returns.csv", rows)
    videos.mkdir(parents=True, exist_ok=True)  # the folder is the stage's output, with or without a video
    if record:
        seed = int_seed(cfg.seed, Stream.EVAL_DREAM, 2)
        T = len(episode.frames)  # the video shows the agent's own tokens and codes of these frames
        dreamt = dream_replay(world_model, vae, episode.tokens[:T], episode.actions, c.temperature, seed)
        with torch.no_grad():
            save_gif(beside_reconstructions(vae, episode.frames, episode.codes[:T], dreamt), videos / "episode.gif")
    else:
        (videos / "episode.gif").unlink(missing_ok=True)  # never leave a video of another run
    fid = f"; dream fidelity (rank corr) {summary['eval/fidelity/rank_corr']:.2f}" if e.fidelity_panel else ""
    print(
        f"evaluate: real {summary['eval/real/return_mean']:.1f} ± {summary['eval/real/return_std']:.1f} "
        f"over {e.episodes} unseen tracks (random policy {summary['eval/random/return_mean']:.1f} ± "
        f"{summary['eval/random/return_std']:.1f}; dream {summary['eval/dream/return_mean']:.1f}{fid})"
    )


if __name__ == "__main__":
    run(main)
