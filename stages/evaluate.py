"""Stage `evaluate`: the controller in the REAL CarRacing-v3 on unseen tracks, the random baseline on the
same tracks, the controller's dream return beside it, and a video."""

from pathlib import Path
from typing import Annotated

import torch
import typer

from wm.agent import init_worker, load_upstream
from wm.cli import MetricsOut, ParamsOption, PlotsOut, TokensIn, VaeIn, WorldModelIn, load_config, run
from wm.config import ctrl_fingerprint
from wm.data import load_tokens
from wm.dream import make_dream
from wm.evaluate import evaluate_real, save_video
from wm.models.controller import make_controller_spec
from wm.training import load_trained
from wm.utils import WorkerPool, resolve_device, write_csv, write_json


def main(
    params: ParamsOption = Path("params.yaml"),
    tokens: TokensIn = Path("data/tokens.h5"),
    vae: VaeIn = Path("models/vae.pt"),
    world_model: WorldModelIn = Path("models/wm.pt"),
    controller: Annotated[Path, typer.Option(help="Trained controller.")] = Path("models/controller.pt"),
    metrics: MetricsOut = Path("metrics/eval.json"),
    plots: PlotsOut = Path("plots/eval"),
    video: Annotated[Path, typer.Option(help="GIF: real frame beside its reconstruction.")] = Path(
        "videos/episode.gif"
    ),
) -> None:
    """Score the controller in the real game (parallel episodes), beside the random policy and the dream."""
    cfg = load_config(params)
    device = resolve_device(cfg.device)
    vae_state, wm_state = load_upstream(cfg, vae, world_model)
    theta = load_trained(controller, ctrl_fingerprint(cfg), "train_ctrl")["controller"]
    spec = make_controller_spec(cfg.ctrl, cfg.fsq, cfg.wm)
    e = cfg.eval
    record = e.video_steps if e.video else 0
    with WorkerPool(e.workers, init_worker, (cfg, vae_state, wm_state if cfg.ctrl.use_hidden else None)) as pool:
        summary, rows, episode = evaluate_real(pool, theta, cfg.seed, e.episodes, e.max_steps, record)

    # The same controller in the dream, same horizon: the gap to the real score is the model's exploitability.
    dream = make_dream(cfg, wm_state, load_tokens(tokens), e.max_steps, device)
    returns = dream.evaluate_candidates(spec, torch.as_tensor(theta)[None], e.episodes, seed=cfg.seed)
    summary["eval/dream/return_mean"] = float(returns[0])

    write_json(metrics, summary)
    write_csv(plots / "returns.csv", rows)
    if record:
        save_video(episode, video)
    print(
        f"evaluate: real {summary['eval/real/return_mean']:.1f} ± {summary['eval/real/return_std']:.1f} "
        f"over {e.episodes} unseen tracks (random policy {summary['eval/random/return_mean']:.1f} ± "
        f"{summary['eval/random/return_std']:.1f}; dream {summary['eval/dream/return_mean']:.1f})"
    )


if __name__ == "__main__":
    run(main)
