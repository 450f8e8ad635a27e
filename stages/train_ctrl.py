"""Stage `train_ctrl`: CMA-ES on the controller, fitness in the dream or the real game -> models/controller.pt."""

from pathlib import Path

from wm.agent import init_worker, load_upstream
from wm.cli import CheckpointOut, MetricsOut, ParamsOption, PlotsOut, TokensIn, VaeIn, WorldModelIn, load_config, run
from wm.config import ctrl_fingerprint
from wm.data import load_tokens
from wm.dream import make_dream
from wm.es import ESSpec, dream_fitness, real_fitness, run_cma_es
from wm.models.controller import make_controller_spec
from wm.training import write_history
from wm.utils import WorkerPool, resolve_device


def main(
    params: ParamsOption = Path("params.yaml"),
    tokens: TokensIn = Path("data/tokens.h5"),
    vae: VaeIn = Path("models/vae.pt"),
    world_model: WorldModelIn = Path("models/wm.pt"),
    out: CheckpointOut = Path("models/controller.pt"),
    metrics: MetricsOut = Path("metrics/ctrl.json"),
    plots: PlotsOut = Path("plots/ctrl"),
) -> None:
    """Optimise the controller with CMA-ES (`ctrl.train_in`: dream or real), one checkpoint per generation."""
    cfg = load_config(params)
    device = resolve_device(cfg.device)
    vae_state, wm_state = load_upstream(cfg, vae, world_model)
    ctrl_spec = make_controller_spec(cfg.ctrl, cfg.fsq, cfg.wm)
    c = cfg.ctrl
    es_spec = ESSpec(c.popsize, c.sigma0, c.generations, cfg.seed, out, ctrl_fingerprint(cfg))
    print(
        f"ctrl: {c.kind} controller, {ctrl_spec.num_params} parameters, CMA-ES popsize {c.popsize}, "
        f"{c.rollouts} episodes of {c.max_steps} steps per candidate, trained in the {c.train_in}"
    )

    def on_generation(state: dict) -> None:
        write_history(state["history"], metrics, plots / "history.csv")

    if c.train_in == "dream":
        dream = make_dream(cfg, wm_state, load_tokens(tokens), c.max_steps, device)
        run_cma_es(es_spec, ctrl_spec, dream_fitness(dream, ctrl_spec, cfg.seed, c.rollouts), on_generation)
    else:
        hidden = wm_state if c.use_hidden else None
        with WorkerPool(c.workers, init_worker, (cfg, vae_state, hidden)) as pool:
            run_cma_es(es_spec, ctrl_spec, real_fitness(pool, cfg.seed, c.rollouts, c.max_steps), on_generation)


if __name__ == "__main__":
    run(main)
