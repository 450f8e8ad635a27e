"""CMA-ES over the controller's flat parameters, with dream or real-game fitness; resumable.

World Models (Sec. 3.3) optimises C with CMA-ES (pycma) on the mean return of several episodes per
candidate. Fitness comes from one of two sources (`ctrl.train_in`):
- `dream`: the whole population in one wide batch of world-model rollouts (wm/dream.py);
- `real`: episodes of the real game through the VAE encoder, spread over worker processes
  (wm/agent.py). This is how the paper trained its CarRacing agent.
In both, every candidate of a generation plays the same tracks/dream worlds (common random numbers), and
the distribution mean is evaluated beside the population, so the curve of the mean shows progress
without the optimism of "best of 16 noisy candidates".

The CMA-ES state (pycma pickles it), numpy's global RNG (which pycma samples from), the generation,
the history and the best candidate go to a resume checkpoint after every generation (wm/checkpoints.py),
so a killed run resumes and ends exactly where an uninterrupted one would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import cma
import numpy as np
import torch
from cma.recombination_weights import RecombinationWeights

from wm.checkpoints import ResumeCache
from wm.dream import DreamEnv
from wm.episodes import EpisodeTask, play_episodes
from wm.errors import WmError
from wm.models.controller import ControllerSpec
from wm.parallel import WorkerPool
from wm.seeding import Stream, int_seed

# candidates (C, P) float64, generation -> fitness (C,) float64 (higher is better)
Fitness = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class ESSpec:
    popsize: int
    sigma0: float
    generations: int
    seed: int
    cache: ResumeCache  # keyed without `generations`: more generations continue a finished run exactly
    x0: np.ndarray | None = None  # the initial mean (default: zeros)
    key: tuple[int, ...] = ()  # names this run's seed streams among several runs (iterative rounds)


def _new_state(spec: ESSpec, num_params: int) -> dict:
    # pycma draws from numpy's global RNG, seeded here through its `seed` option (32 bits, > 0).
    es = cma.CMAEvolutionStrategy(
        np.zeros(num_params) if spec.x0 is None else np.asarray(spec.x0, dtype=np.float64),
        spec.sigma0,
        {
            "popsize": spec.popsize,
            "seed": int_seed(spec.seed, Stream.CMA, *spec.key, bits=32),
            "verbose": -9,
            "verb_log": 0,
            "verb_disp": 0,
        },
    )
    return {"es": es, "generation": 0, "history": [], "best": None, "best_fitness": -np.inf, "real_steps": 0}


def _load_state(spec: ESSpec, num_params: int) -> dict:
    ckpt = spec.cache.load("generation", spec.generations)
    if ckpt is None:
        return _new_state(spec, num_params)
    state = ckpt["es_state"]
    np.random.set_state(state.pop("numpy_rng"))  # noqa: NPY002 - pycma's RNG
    return state


def run_cma_es(
    spec: ESSpec,
    ctrl_spec: ControllerSpec,
    fitness: Fitness,
    on_generation: Callable[[dict], None] | None = None,
) -> dict:
    """Optimise; returns the final state: es, generation, history, best (params), best_fitness."""
    state = _load_state(spec, ctrl_spec.num_params)
    es: cma.CMAEvolutionStrategy = state["es"]
    finished_before = state["generation"] == spec.generations
    while state["generation"] < spec.generations:
        g = state["generation"]
        t0 = time.perf_counter()
        candidates = np.asarray(es.ask())  # (popsize, P)
        mean = np.asarray(es.mean)[None]  # (1, P): the distribution mean, evaluated on the same episodes
        scores = fitness(np.concatenate([candidates, mean]), g)  # (popsize + 1,)
        if not np.all(np.isfinite(scores)):
            raise WmError("ctrl: non-finite fitness (a diverged world model?); retrain with a lower wm.lr")
        state["real_steps"] += getattr(fitness, "last_steps", 0)  # real-game fitness counts its steps
        pop, mean_score = scores[:-1], float(scores[-1])
        es.tell(list(candidates), list(-pop))  # pycma minimises
        i = int(np.argmax(pop))
        best_params, best_score = (candidates[i], float(pop[i])) if pop[i] >= mean_score else (mean[0], mean_score)
        if best_score > state["best_fitness"]:
            state["best"], state["best_fitness"] = best_params.astype(np.float32), best_score
        row = {
            "generation": g + 1,
            "ctrl/train/fitness_best": float(pop.max()),
            "ctrl/train/fitness_mean": float(pop.mean()),
            "ctrl/train/fitness_std": float(pop.std()),
            "ctrl/train/fitness_of_mean": mean_score,
            "ctrl/train/best_so_far": state["best_fitness"],
            "ctrl/train/sigma": float(es.sigma),
            "ctrl/train/real_steps": state["real_steps"],
        }
        state["history"].append(row)
        state["generation"] = g + 1
        spec.cache.save(
            es_state=state | {"numpy_rng": np.random.get_state()},  # noqa: NPY002 - pycma's RNG
            generation=state["generation"],
        )
        if on_generation is not None:
            on_generation(state)
        print(
            f"ctrl gen {g + 1}/{spec.generations}  best {row['ctrl/train/fitness_best']:.1f}  "
            f"mean {row['ctrl/train/fitness_mean']:.1f} ± {row['ctrl/train/fitness_std']:.1f}  "
            f"of-mean {mean_score:.1f}  best-so-far {state['best_fitness']:.1f}  sigma {es.sigma:.3f}  "
            f"({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
    if on_generation is not None and finished_before:
        on_generation(state)  # a finished checkpoint: rewrite the artefacts from its history
    return state


def _better_half(returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu,) indices of the better half of N >= 2 returns, best first (equal returns keep the input order), and
    (mu,) their weights: CMA-ES's default positive weights, decreasing, summing to 1."""
    weights = np.asarray(RecombinationWeights(len(returns)).positive_weights)
    return np.argsort(-np.asarray(returns), kind="stable")[: len(weights)], weights


def recombine(params: np.ndarray, returns: np.ndarray) -> np.ndarray:
    """The mean of an evolution strategy's next generation from one generation's returns: CMA-ES's weighted
    recombination of the better half (Hansen 2016, arXiv:1604.00772, the mean update with c_m = 1 and the
    default positive weights, pycma's `RecombinationWeights`). params (N, P), returns (N,) -> (P,); equal
    returns keep the input order."""
    if len(returns) == 1:
        return params[0].copy()
    better, weights = _better_half(returns)
    return (weights[:, None] * params[better]).sum(axis=0).astype(params.dtype)


def recombination_weights(returns: np.ndarray) -> np.ndarray:
    """(N,) each input's weight in `recombine`: zero outside the better half."""
    if len(returns) == 1:
        return np.ones(1)
    better, weights = _better_half(returns)
    out = np.zeros(len(returns))
    out[better] = weights
    return out


class RealFitness:
    """Mean real-game return over `rollouts` tracks, the same tracks for every candidate of a generation and new
    tracks each generation (of `stream`, CTRL for training: never the collected or evaluation tracks).
    `last_steps` counts the real-game steps of the last call (the budget every method is compared by)."""

    def __init__(
        self,
        pool: WorkerPool,
        rollouts: int,
        max_steps: int,
        hopeless_steps: int = 0,
        progress: bool = False,
        *,
        lockstep: int,
        stream: Stream = Stream.CTRL,
    ):
        self.pool, self.rollouts, self.max_steps, self.hopeless_steps = pool, rollouts, max_steps, hopeless_steps
        self.stream = stream
        self.lockstep = lockstep  # episodes per worker in one VAE batch (ctrl.lockstep)
        self.progress = progress  # a progress bar within each generation
        self.last_steps = 0

    def __call__(self, candidates: np.ndarray, generation: int) -> np.ndarray:
        R = self.rollouts
        tracks = [(self.stream, generation * R + r) for r in range(R)]
        tasks = [
            EpisodeTask(t, t, self.max_steps, params=c.astype(np.float32), hopeless_steps=self.hopeless_steps)
            for c in candidates
            for t in tracks
        ]
        episodes = play_episodes(self.pool, tasks, f"ctrl gen {generation + 1}", self.progress, lockstep=self.lockstep)
        self.last_steps = sum(ep.steps for ep in episodes)
        returns = np.array([ep.ret for ep in episodes])  # (C * R,), candidate-major
        return returns.reshape(len(candidates), R).mean(axis=1)  # (C, R) -> (C,)


def dream_fitness(
    dream: DreamEnv,
    ctrl_spec: ControllerSpec,
    master_seed: int,
    rollouts: int,
    key: tuple[int, ...] = (),
    pessimism: float = 0.0,
) -> Fitness:
    """Mean dream return over `rollouts` dream worlds (minus `pessimism` x their std), shared by all candidates
    of a generation; `key` names the run among several (iterative rounds), so that each draws its own worlds."""

    def fitness(candidates: np.ndarray, generation: int) -> np.ndarray:
        params = torch.as_tensor(candidates, dtype=torch.float32)
        seed = int_seed(master_seed, Stream.DREAM, *key, generation)
        return dream.evaluate_candidates(ctrl_spec, params, rollouts, seed, pessimism).cpu().double().numpy()

    return fitness
