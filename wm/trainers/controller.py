"""`ControllerTrainer`: CMA-ES on the controller, its fitness from the dream or the real game."""

from __future__ import annotations

from pathlib import Path

import torch

from wm.agent import Agent, AgentModels
from wm.checkpoints import ResumeCache
from wm.config import WorldModelAgentConfig, ctrl_fingerprint
from wm.datafiles import Tokens, load_tokens
from wm.dream import make_dream
from wm.episodes import init_worker
from wm.errors import WmError
from wm.es import ESSpec, dream_fitness, real_fitness, run_cma_es
from wm.metrics import write_history
from wm.models.controller import EvolutionaryController
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel
from wm.parallel import WorkerPool
from wm.runtime import RuntimeSettings, load_runtime, resolve_device


class ControllerTrainer:
    """Optimise the controller with CMA-ES, its fitness from the dream (`ctrl.train_in: dream`, needs the
    tokens file for real episode starts) or the real game (`real`, in worker processes).

    >>> controller = ControllerTrainer(vae, world_model, config).fit("data/tokens.h5")
    >>> agent = Agent(vae, controller, world_model)
    """

    def __init__(
        self,
        vae: FSQVAE,
        world_model: WorldModel,
        config: WorldModelAgentConfig,
        runtime: RuntimeSettings | None = None,
    ):
        self.vae, self.world_model, self.config = vae, world_model, config
        self.runtime = runtime or load_runtime()
        self.device = resolve_device(config.device)
        self.controller = EvolutionaryController(config.controller)
        self.state: dict | None = None

    def fit(
        self, tokens: str | Path | Tokens | None = None, metrics: Path | None = None, plots: Path | None = None
    ) -> EvolutionaryController:
        """Run CMA-ES (resuming when possible); returns the controller holding the best candidate."""
        cfg, rt, c = self.config, self.runtime, self.config.ctrl
        spec = self.controller.spec
        cache = ResumeCache.for_run(
            rt.cache_dir, "ctrl", ctrl_fingerprint(cfg), "generations", self.device.type, __name__
        )
        es_spec = ESSpec(c.popsize, c.sigma0, c.generations, cfg.seed, cache)
        print(
            f"ctrl: {c.kind} controller, {spec.num_params} parameters, CMA-ES popsize {c.popsize}, "
            f"{c.rollouts} episodes of {c.max_steps} steps per candidate, trained in the {c.train_in}"
        )

        def on_generation(state: dict) -> None:
            history = state["history"]
            write_history(metrics, None if plots is None else plots / "history.csv", history, history[-1])

        if c.train_in == "dream":
            if tokens is None:
                raise WmError("ctrl.train_in: dream needs the tokens file (dreams start from real episode starts)")
            data = tokens if isinstance(tokens, Tokens) else load_tokens(tokens)
            dream = make_dream(self.world_model.to(self.device), data, c.temperature, c.max_steps)
            self.state = run_cma_es(es_spec, spec, dream_fitness(dream, spec, cfg.seed, c.rollouts), on_generation)
        else:
            workers = min(rt.num_workers, (c.popsize + 1) * c.rollouts)
            models = AgentModels.of(self.vae, cfg.controller, self.world_model)
            with WorkerPool(workers, init_worker, (cfg, rt.fast_env, models)) as pool:
                self.state = run_cma_es(es_spec, spec, real_fitness(pool, c.rollouts, c.max_steps), on_generation)
        self.controller.params.copy_(torch.from_numpy(self.state["best"]))
        return self.controller

    def agent(self) -> Agent:
        """The trained agent (after `fit`): V, M and C acting on CarRacing observations."""
        return Agent(self.vae, self.controller, self.world_model)

    def publish(self, path: str | Path) -> None:
        """Write the best controller as a weights-only model file (after `fit`)."""
        assert self.state is not None, "fit first"
        meta = {"generations": self.state["generation"], "best_fitness": self.state["best_fitness"]}
        self.controller.publish(Path(path), ctrl_fingerprint(self.config), meta)
