"""`ControllerTrainer`: CMA-ES on the controller, its fitness from the dream or the real game, or the
actor-critic in imagination (`ctrl.optimizer`), and iterative training (World Models, Sec. 5): rounds of
collecting real episodes with the current controller, retraining the world model on all data so far and
retraining the controller in the new dream, then a real-game check that picks the controller to publish."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from wm.agent import Agent, AgentModels
from wm.checkpoints import ResumeCache
from wm.config import WorldModelAgentConfig, ctrl_fingerprint, round_fingerprint, vae_fingerprint, wm_fingerprint
from wm.datafiles import Tokens, concat_tokens, load_tokens, steps_of, write_tokens
from wm.dream import ContextStarts, DreamEnv, FixedStarts, controller_dream
from wm.episodes import Episode, EpisodeTask, init_worker, play_episodes
from wm.errors import WmError
from wm.es import ESSpec, RealFitness, dream_fitness, recombination_weights, recombine, run_cma_es
from wm.fidelity import spearman
from wm.files import write_csv, write_json
from wm.models.controller import EvolutionaryController
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel
from wm.parallel import WorkerPool, open_pool, pool_workers
from wm.runtime import RuntimeSettings, load_runtime, resolve_device
from wm.seeding import Stream, int_seed, numpy_rng
from wm.trainers.actor_critic import ActorCriticTrainer
from wm.trainers.world_model import WorldModelTrainer

# Dreams per collected episode when the previous round's dream predicts its return (per-round fidelity).
PREDICTIONS_PER_EPISODE = 4


class ControllerTrainer:
    """Optimise the controller with CMA-ES, its fitness from the dream (`ctrl.train_in: dream`, needs the
    tokens file: dreams start from real data) or the real game (`real`, in worker processes), or by gradients
    in imagination (`ctrl.optimizer: actor_critic`). In the dream, `iterate.rounds` rounds of collect ->
    retrain world model -> retrain controller follow, and (`iterate.publish`: checked, check_recombined) a real-game
    check of the rounds' controllers picks the one to publish, or the weights of their recombination (recombined:
    the last round's recombination by real return is published, and nothing trains after it).

    >>> controller = ControllerTrainer(vae, world_model, config).fit("data/tokens.h5")
    >>> agent = Agent(vae, controller, world_model)   # world_model: the last round's
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
        self.history: list[dict] = []  # CMA-ES generations of every round
        self.rounds: list[dict] = []  # one row per round: data, real and dream returns, fidelity
        self.round_data: list[Tokens] = []  # the episodes collected in rounds 1..R
        # rounds 0..R (0..R-1 with iterate.publish: recombined): (params, dream fitness)
        self.round_controllers: list[tuple[np.ndarray, float]] = []
        self.recombined: list[np.ndarray] = []  # rounds 1..R with iterate.recombine: the dream training's start
        self.initial: np.ndarray | None = None  # where round 0's dream training began (iterate.first_centre)
        self.checks: list[dict] = []  # one row per controller of the real-game check (iterate.publish)
        self.real_steps = 0  # real-game steps used for training: data, rounds, real-game fitness
        self.actor_critic: ActorCriticTrainer | None = None  # ctrl.optimizer: actor_critic, kept across rounds
        self._pool: WorkerPool | None = None  # the real-game workers, open for a whole fit (_real_pool)

    def _cache(self, length_key: str = "generations", **run) -> ResumeCache:
        fingerprint = round_fingerprint(self.config) | {"run": run}
        rt, runs = self.runtime, self.config.iterate.rounds + 1  # round 0 and each round: a checkpoint each
        return ResumeCache.for_run(rt.cache_dir, "ctrl", fingerprint, length_key, self.device.type, __name__, runs)

    def fit(
        self, tokens: str | Path | Tokens | None = None, metrics: Path | None = None, plots: Path | None = None
    ) -> EvolutionaryController:
        """Run CMA-ES or the actor-critic (and the rounds; resuming when possible); returns the controller
        (CMA-ES: the best candidate; actor-critic: the actor's mean). `metrics`/`plots` get the last row and
        every generation's (or measurement's) and round's rows."""
        cfg, c = self.config, self.config.ctrl
        spec = self.controller.spec
        how = (
            f"actor-critic, {c.ac.updates} updates of {c.ac.batch} imagined trajectories of {c.ac.horizon} steps"
            if c.optimizer == "actor_critic"
            else f"CMA-ES popsize {c.popsize}, {c.rollouts} episodes of {c.max_steps} steps per candidate"
        )
        print(
            f"ctrl: {c.kind} controller, {spec.num_params} parameters, {how}, trained in the {c.train_in}"
            + (f", {cfg.iterate.rounds} rounds of iterative training" if cfg.iterate.rounds else "")
        )
        self.history, self.rounds, self.round_data, self.actor_critic = [], [], [], None
        self.round_controllers, self.recombined, self.checks = [], [], []
        with self._pool_scope():
            self._fit(tokens, metrics, plots)
        self._write(metrics, plots)
        return self.controller

    def _fit(self, tokens: str | Path | Tokens | None, metrics: Path | None, plots: Path | None) -> None:
        cfg, c = self.config, self.config.ctrl
        if c.train_in == "real":
            self.real_steps = 0 if tokens is None else int(self._tokens(tokens).steps.step_offsets[-1])
            with self._real_pool((c.popsize + 1) * c.rollouts) as pool:
                fitness = RealFitness(
                    pool, c.rollouts, c.max_steps, c.hopeless_steps, self.runtime.progress, lockstep=c.lockstep
                )
                self._cma_es(fitness, self._cache(), metrics, plots)
            self.real_steps += self.state["real_steps"]
        else:
            if tokens is None:
                raise WmError("ctrl.train_in: dream needs the tokens file (dreams start from real data)")
            data = self._tokens(tokens)
            self.real_steps = int(data.steps.step_offsets[-1])
            self._train_in_dream(0, data, metrics, plots)
            for r in range(1, cfg.iterate.rounds + 1):
                self._round(r, data, metrics, plots)
            if cfg.iterate.rounds and cfg.iterate.publish == "recombined":  # the controller of _round's recombination
                self.state = {"best": self.recombined[-1].copy(), "best_fitness": None}  # never trained in a dream
                print(
                    f"publishing round {cfg.iterate.rounds}'s recombination of its {cfg.iterate.episodes} collected "
                    f"controllers by real return (no check), {self.real_steps} real steps in all",
                    flush=True,
                )
            elif cfg.iterate.rounds and cfg.iterate.publish != "last":
                self._check()

    def _real_pool(self, tasks: int) -> contextlib.AbstractContextManager[WorkerPool]:
        """Workers that play real-game episodes with the current V, M (for a controller that reads h) and C,
        no more than `tasks` (the most episodes played at once).

        One pool serves every round's collection and the check (`with` leaves it open; `fit` closes it):
        starting one spawns processes that import torch and build envs, ~4 s on 2 cores, 9 times in the
        default's rounds. Only a controller that reads h needs a fresh pool each time, since every round
        retrains the world model its workers run. Neither the worker that plays an episode nor the episodes
        grouped with it change it (wm/episodes.py), so sharing the pool changes no output."""
        cfg = self.config

        def fresh() -> WorkerPool:  # the models are copied for the workers only when a pool starts
            models = AgentModels.of(self.vae, cfg.controller, self.world_model)
            return open_pool(self.runtime, tasks, init_worker, (cfg, self.runtime.fast_env, models))

        if cfg.ctrl.use_hidden:
            return fresh()
        if self._pool is None or self._pool.workers < pool_workers(self.runtime, tasks):
            self._close_pool()
            self._pool = fresh()
        return contextlib.nullcontext(self._pool)

    @contextlib.contextmanager
    def _pool_scope(self) -> Iterator[None]:
        """Close the shared pool when the fit ends; on an error or interrupt, stop its work in flight too."""
        try:
            yield
        except BaseException as err:
            self._close_pool(type(err), err, err.__traceback__)
            raise
        self._close_pool()

    def _close_pool(self, *exc) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.__exit__(*(exc or (None, None, None)))

    @staticmethod
    def _tokens(tokens: str | Path | Tokens) -> Tokens:
        return tokens if isinstance(tokens, Tokens) else load_tokens(tokens)

    def _cma_es(self, fitness, cache: ResumeCache, metrics, plots, x0=None, sigma=None, key=()) -> None:
        c, previous = self.config.ctrl, list(self.history)
        es_spec = ESSpec(c.popsize, sigma or c.sigma0, c.generations, self.config.seed, cache, x0, key)
        round_index = {"round": key[0] if key else 0}

        def on_generation(state: dict) -> None:
            self.history = previous + [round_index | row for row in state["history"]]
            self._write(metrics, plots)

        self.state = run_cma_es(es_spec, self.controller.spec, fitness, on_generation)
        self.controller.params.copy_(torch.from_numpy(self.state["best"]))

    def _dream(self, data: Tokens) -> DreamEnv:
        c = self.config.ctrl
        return controller_dream(self.world_model.to(self.device), ContextStarts.of_controller(data, c), c, c.max_steps)

    def _train_in_dream(self, r: int, data: Tokens, metrics, plots) -> None:
        """CMA-ES or the actor-critic in the dream of the current world model; rounds after the first may start at
        the previous controller (iterate.warm_start). Round 0 is exactly the run without rounds."""
        it, c, key = self.config.iterate, self.config.ctrl, (r,) if r else ()
        warm = r > 0 and it.warm_start
        if c.optimizer == "actor_critic":
            self._actor_critic(r, data, warm, metrics, plots)
        else:
            fitness = dream_fitness(
                self._dream(data), self.controller.spec, self.config.seed, c.rollouts, key, c.pessimism
            )
            params = self.controller.params.numpy()
            x0 = params.copy() if warm else np.zeros_like(params)  # cold: from the zero controller
            if r == 0:
                self.initial = x0
            self._cma_es(fitness, self._cache(round=r), metrics, plots, x0, it.sigma if warm else None, key)
        self.round_controllers.append((self.controller.params.numpy().copy(), float(self.state["best_fitness"])))

    def _actor_critic(self, r: int, data: Tokens, warm: bool, metrics, plots) -> None:
        """`ctrl.ac.updates` actor-critic updates in imagination (wm/trainers/actor_critic.py); a warm-started
        round continues the previous round's actor, critic and optimizers."""
        cfg, previous = self.config, list(self.history)
        if self.actor_critic is None or not warm:
            self.actor_critic = ActorCriticTrainer(
                self.controller.spec,
                cfg.ctrl.ac,
                cfg.fsq.dim + cfg.wm.hidden,
                cfg.seed,
                self.device,
                run=r,
                progress=self.runtime.progress,
            )
            if r == 0:
                self.initial = self.actor_critic.model.actor.detach().cpu().numpy().copy()
        elif cfg.iterate.recombine:  # continue from the round's recombined controller, not the last actor
            with torch.no_grad():
                self.actor_critic.model.actor.copy_(self.controller.params)

        def on_measure(rows: list[dict]) -> None:
            self.history = previous + [{"round": r} | row for row in rows]
            self._write(metrics, plots)

        cache = self._cache("ac.updates", round=r, part="actor_critic")
        rows = self.actor_critic.fit(self._dream(data), data, cache, run=r, on_measure=on_measure)
        actor = self.actor_critic.model.actor.detach().cpu()
        self.controller.params.copy_(actor)
        self.state = {"best": actor.numpy().copy(), "best_fitness": rows[-1]["ctrl/train/dream_return"]}

    def _round(self, r: int, data: Tokens, metrics, plots) -> None:
        """Round r: collect with the current controller (perturbed per episode), measure how well the current
        dream predicted those episodes, retrain the world model on everything so far, retrain the controller
        (from the collected controllers' recombination by real return with iterate.recombine)."""
        it = self.config.iterate
        params, collected = self._collect(r)
        predicted = self._predict_returns(params, collected)
        real = np.array([ep.ret for ep in collected])
        dream, start = real[: it.dream_episodes], real[it.dream_episodes :]  # by centre (see _collect)
        self.real_steps += sum(ep.steps for ep in collected)
        if it.recombine:  # the round's perturbed episodes are one generation of a real-game evolution strategy
            self.recombined.append(recombine(params, real))
            self.controller.params.copy_(torch.from_numpy(self.recombined[-1]))
        row = {
            "round": r,
            "real_steps": self.real_steps,
            "collect_return_mean": float(real.mean()),
            "collect_return_unperturbed": float(dream[0]) if len(dream) else None,  # the dream's controller
            "predicted_return_mean": float(predicted.mean()),
            "episode_rank_corr": spearman(predicted, real),
            "wm_val_ce": None,
            "wm_val_return_corr": None,
            "dream_fitness": None,
        }
        trained = ""
        # iterate.publish: recombined publishes the last recombination with the world model its episodes were
        # played with (M of a controller that reads h): what would train after it is never used
        if r < it.rounds or it.publish != "recombined":
            all_data = concat_tokens([data, *self.round_data])
            trainer = WorldModelTrainer(self.world_model, self.vae, self.config, self.runtime)
            # keyed by the rounds' params too: the data so far depends on them, not only on the world model's params
            run = {"round": r, "rounds": round_fingerprint(self.config)}
            wm_result = trainer.fit(all_data, epochs=it.wm_epochs, run=run, runs=it.rounds)
            self._train_in_dream(r, all_data, metrics, plots)
            row |= {
                "wm_val_ce": wm_result.selected["wm/val/ce"],
                "wm_val_return_corr": wm_result.selected["wm/val/return_corr"],
                "dream_fitness": float(self.state["best_fitness"]),
            }
            trained = f", world model val ce {row['wm_val_ce']:.3f}, dream fitness {row['dream_fitness']:.1f}"
        self.rounds.append(row)
        by_centre = ""
        if len(dream) and len(start):  # did the dream's training beat its start in the game?
            two = r > 1 or self.config.iterate.first_centre == "initial"  # round 1 around the dream alone: one centre
            self.rounds[-1] |= {
                "collect_return_dream_mean": float(dream.mean()) if two else None,
                "collect_return_start_mean": float(start.mean()) if two else None,
            }
            if two:
                by_centre = f" (around the dream's controller {dream.mean():.1f}, around its start {start.mean():.1f})"
        print(
            f"round {r}/{it.rounds}: collected return {real.mean():.1f}{by_centre} (dream predicted "
            f"{predicted.mean():.1f}, "
            f"rank corr {row['episode_rank_corr']:.2f}){trained}, {self.real_steps} real steps so far",
            flush=True,
        )

    def _check(self) -> None:
        """Publish by real return, not the last round's controller: the last CMA-ES run is one search past the
        last real check and can exploit the last dream (seed 1, 12 rounds: the last controller scored -65 on the
        evaluation tracks, the one behind the rounds' best unperturbed episode 332). Checked: the last round's
        controller (never played), the `check_controllers - 1` earlier ones whose unperturbed collected episode
        scored best and, with iterate.recombine, every round's recombined start (never played unperturbed: the
        dream training can lose what the recombination gained), each on the same `check_episodes` new tracks
        (stream CHECK) of `check_steps`. Published: the best (iterate.publish: checked; ties go to the later
        controller) or the recombination of all by check return (check_recombined): the candidates of one run
        score close on 4 tracks, and the recombination averages over which one the check happens to favour. With
        the last world model as M, so a controller that reads h is checked as published."""
        it = self.config.iterate
        last = len(self.round_controllers) - 1
        unperturbed = [row["collect_return_unperturbed"] for row in self.rounds]  # controller r-1 in round r
        played = [-np.inf if u is None else u for u in unperturbed]  # iterate.dream_share: 0 never plays them
        earlier = sorted(range(last), key=lambda r: (-played[r], -r))[: it.check_controllers - 1]
        # (round, source, params, dream fitness) in the order the rounds made them: a recombined start, then the
        # dream's controller trained from it
        candidates = [(r, "dream", *self.round_controllers[r]) for r in [*earlier, last]]
        candidates += [(r, "recombined", m, None) for r, m in enumerate(self.recombined, start=1)]
        candidates.sort(key=lambda c: (c[0], c[1] == "dream"))
        params = np.stack([c[2] for c in candidates])  # (K, P)
        with self._real_pool(len(candidates) * it.check_episodes) as pool:
            check = RealFitness(
                pool,
                it.check_episodes,
                it.check_steps,
                0,
                self.runtime.progress,
                lockstep=self.config.ctrl.lockstep,
                stream=Stream.CHECK,
            )
            returns = check(params, 0)  # (K,)
        self.real_steps += check.last_steps
        best = max(range(len(candidates)), key=lambda i: (returns[i], i))
        if it.publish == "checked":
            weights = np.eye(len(candidates))[best]  # (K,) each candidate's share of the published controller
            published, fitness = params[best], candidates[best][3]
        else:  # never trained in a dream: no dream fitness
            weights, published, fitness = recombination_weights(returns), recombine(params, returns), None
        self.controller.params.copy_(torch.from_numpy(published))
        self.state = {"best": published.copy(), "best_fitness": fitness}
        self.checks = [
            {
                "round": r,
                "source": source,
                # the controller that collected round r + 1 (the last dream controller was never played)
                "collect_return_unperturbed": unperturbed[r] if source == "dream" and r < last else None,
                "check_return_mean": float(ret),
                "dream_fitness": trained_fitness,
                "weight": float(weights[i]),
            }
            for i, ((r, source, _, trained_fitness), ret) in enumerate(zip(candidates, returns, strict=True))
        ]
        names = [f"round {r}{' recombined' if source == 'recombined' else ''}" for r, source, *_ in candidates]
        scores = ", ".join(f"{name}: {ret:.1f}" for name, ret in zip(names, returns, strict=True))
        mixed = ", ".join(f"{weights[i]:.2f} x {names[i]}" for i in np.argsort(-weights, kind="stable") if weights[i])
        what = f"{names[best]}'s controller" if it.publish == "checked" else f"the recombination {mixed}"
        print(
            f"check: {len(candidates)} controllers x {it.check_episodes} real episodes of {it.check_steps} steps "
            f"({scores}) -> publishing {what}, {self.real_steps} real steps in all",
            flush=True,
        )

    def _collect(self, r: int) -> tuple[np.ndarray, list[Episode]]:
        """The round's episodes (resumable: kept in the resume cache once complete): episode i of round r is
        played on track (ROUND, (r-1)*E + i) by a centre plus a Gaussian perturbation of std iterate.noise: the
        current (dream-trained) controller for i < n = iterate.dream_episodes, the recombined start its training
        began from for the rest (round 1: iterate.first_centre); each centre's first episode (i = 0, i = n) is
        unperturbed. Returns the (E, P) parameters and the episodes, frames dropped."""
        cfg, it = self.config, self.config.iterate
        theta, n = self.controller.params.numpy(), it.dream_episodes
        first = self.initial if it.first_centre == "initial" else theta  # round 1: no recombination yet
        start = self.recombined[-1] if self.recombined else first
        centres = np.stack([theta if i < n else start for i in range(it.episodes)])  # (E, P)
        noise = [
            np.zeros_like(theta)
            if i in (0, n)  # each centre's first episode is unperturbed
            else it.noise * numpy_rng(cfg.seed, Stream.ROUND, r, i).standard_normal(theta.shape).astype(np.float32)
            for i in range(it.episodes)
        ]
        params = centres + np.stack(noise)  # (E, P)
        store = self._cache(round=r, part="data").path.with_suffix(".h5")
        if store.exists():
            self.round_data.append(load_tokens(store))
            return params, self._episodes_of(self.round_data[-1])
        tracks = [(Stream.ROUND, (r - 1) * it.episodes + i) for i in range(it.episodes)]
        # The tokens the agent acted on are the round's data: no frames to ship back and encode again
        tasks = [EpisodeTask(t, t, it.max_steps, p, keep_tokens=True) for t, p in zip(tracks, params, strict=True)]
        with self._real_pool(it.episodes) as pool:
            episodes = play_episodes(
                pool, tasks, f"round {r} collect", self.runtime.progress, lockstep=cfg.ctrl.lockstep
            )
        tokens, codes = np.concatenate([ep.tokens for ep in episodes]), np.concatenate([ep.codes for ep in episodes])
        write_tokens(store, tokens, codes, steps_of(episodes), {"levels": cfg.fsq.levels, "seed": cfg.seed, "round": r})
        self.round_data.append(load_tokens(store))
        return params, self._episodes_of(self.round_data[-1])

    @staticmethod
    def _episodes_of(data: Tokens) -> list[Episode]:
        """The per-step records of a round's stored episodes (no frames)."""
        s, o = data.steps, data.steps.step_offsets
        return [
            Episode(s.actions[a:b], s.rewards[a:b], s.terminated[a:b], s.truncated[a:b], int(s.track_seeds[e]))
            for e, (a, b) in enumerate(zip(o[:-1], o[1:], strict=True))
        ]

    @torch.no_grad()
    def _predict_returns(self, params: np.ndarray, episodes: list[Episode]) -> np.ndarray:
        """(E,) mean dream return of each collected episode's controller from that episode's first frame, in the
        current (not yet retrained) dream, at the collection's horizon: how well the dream predicted the game."""
        E, k, c = len(episodes), PREDICTIONS_PER_EPISODE, self.config.ctrl
        data = self.round_data[-1]
        first = torch.from_numpy(data.tokens[data.steps.frame_offsets[:-1]])  # (E,) first frame of each episode
        dream = controller_dream(self.world_model, FixedStarts(first), c, self.config.iterate.max_steps)
        dream = DreamEnv(dream.model, dream.fsq, dream.starts, E * k, **dream.settings())  # env b: episode b % E
        tiled = torch.from_numpy(params).to(self.device).repeat(k, 1)  # (E, P) -> (k * E, P)
        spec = self.controller.spec
        seed = int_seed(self.config.seed, Stream.ROUND, len(self.rounds) + 1)
        returns = dream.rollout(lambda obs: spec.act(tiled, obs), seed, use_hidden=spec.h_dim > 0)
        return returns.view(k, E).mean(dim=0).cpu().double().numpy()  # (k * E,) -> (k, E) -> (E,)

    def _write(self, metrics: Path | None, plots: Path | None) -> None:
        if metrics is not None and self.history:
            last = self.history[-1] | {"ctrl/total/real_steps": self.real_steps, "ctrl/total/rounds": len(self.rounds)}
            if self.rounds:
                last |= {f"ctrl/round/{k}": v for k, v in self.rounds[-1].items() if k != "round" and v is not None}
            if self.checks:
                top = self._top_check()
                last |= {
                    "ctrl/check/round": top["round"],
                    "ctrl/check/recombined": int(top["source"] == "recombined"),
                    "ctrl/check/return_mean": top["check_return_mean"],
                    "ctrl/check/weight": top["weight"],
                    "ctrl/check/last_return_mean": self.checks[-1]["check_return_mean"],
                }
            write_json(metrics, last)
        if plots is not None:
            if self.history:
                write_csv(plots / "history.csv", self.history)
            if self.rounds:
                write_csv(plots / "rounds.csv", self.rounds)
            if self.checks:
                write_csv(plots / "check.csv", self.checks)

    def _top_check(self) -> dict:
        """The check's row of the controller with the largest share of the published one (iterate.publish:
        checked: the published controller itself)."""
        return max(self.checks, key=lambda row: (row["weight"], row["check_return_mean"], row["round"]))

    def agent(self) -> Agent:
        """The trained agent (after `fit`): V, M (the last round's) and C acting on CarRacing observations."""
        return Agent(self.vae, self.controller, self.world_model)

    def round_tokens(self) -> Tokens | None:
        """The episodes collected in every round, as one token dataset (None without rounds)."""
        return concat_tokens(self.round_data) if self.round_data else None

    def publish(self, folder: str | Path) -> None:
        """Write the trained agent (after `fit`): folder/vae.pt, wm.pt (the last round's world model) and
        controller.pt, weights-only files that `wm.load_agent(folder)` reads."""
        assert self.state is not None, "fit first"
        cfg, folder = self.config, Path(folder)
        meta = {"best_fitness": self.state["best_fitness"], "real_steps": self.real_steps, "rounds": len(self.rounds)}
        if self.checks:
            top = self._top_check()
            meta |= {
                "published_round": top["round"],
                "published_source": top["source"],
                "published_weight": top["weight"],
            }
        elif self.rounds and cfg.iterate.publish == "recombined":
            meta |= {"published_round": len(self.rounds), "published_source": "recombined", "published_weight": 1.0}
        self.vae.publish(folder / "vae.pt", vae_fingerprint(cfg), {})
        wm_fp = ctrl_fingerprint(cfg) if self.rounds else wm_fingerprint(cfg)  # retrained in the rounds
        retrained = sum(row["wm_val_ce"] is not None for row in self.rounds)  # publish: recombined skips the last
        self.world_model.publish(folder / "wm.pt", wm_fp, {"rounds": retrained})
        self.controller.publish(folder / "controller.pt", ctrl_fingerprint(cfg), meta)
