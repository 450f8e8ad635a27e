"""Steps/s of collect, real-game fitness and evaluate on each parallel backend, beside the fast env alone.

    .venv/bin/python benchmarks/bench_parallel.py                       # 1 and 2 local workers, Ray on 2 CPUs
    .venv/bin/python benchmarks/bench_parallel.py --workers 4 --ray-cpus 4 --steps 500

Each measurement calls the library's own entry point as a stage does (wm.collect.DataCollector, wm.es.RealFitness
and wm.evaluate.evaluate_real on wm.parallel.open_pool) and gives its steady-state rate: fitness and evaluate are
timed on a pool whose workers are started and warmed up; collect, which opens its own pool, by the marginal rate
between runs of E and 3E episodes. A pool's start-up (processes or Ray actors importing torch), paid once per
stage, is printed on its own; Ray itself is started once, before any timing (``ray.init`` on --ray-cpus local
CPUs; printed). The agent is the default-size FSQ-VAE encoder (untrained) and the default
linear controller; the fast env alone is gymnasium's AsyncVectorEnv with as many workers (benchmarks/bench_env.py).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np
from bench_env import vector_rate

from wm.agent import AgentModels
from wm.collect import DataCollector
from wm.config import WorldModelAgentConfig
from wm.episodes import init_worker
from wm.es import RealFitness
from wm.evaluate import evaluate_real
from wm.models.controller import ControllerSpec
from wm.models.fsq_vae import FSQVAE
from wm.parallel import connect_ray, open_pool
from wm.runtime import RuntimeSettings


def _noop() -> None:
    pass


def measure(runtime: RuntimeSettings, cfg: WorldModelAgentConfig, args: argparse.Namespace) -> dict[str, float]:
    """Steady-state steps/s of the three entry points and the start-up of an empty pool, under `runtime`."""
    models = AgentModels.of(FSQVAE(cfg.fsq_vae).eval(), cfg.controller)
    P = ControllerSpec.from_config(cfg.controller).num_params
    candidates = np.random.default_rng(0).normal(0, 0.5, (args.popsize, P)).astype(np.float32)
    initargs = (cfg, True, models)
    rates = {}

    start = time.perf_counter()
    with open_pool(runtime, 2 * args.episodes, _noop, ()) as pool:
        list(pool.map(abs, range(pool.workers)))
    rates["start-up s"] = time.perf_counter() - start

    # collect opens its own pool: its rate is the marginal one between runs of E and 3E episodes.
    seconds, steps = [], []
    for episodes in (args.episodes, 3 * args.episodes):
        collect = cfg.collect.model_copy(update={"episodes": episodes})
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            metrics = DataCollector(cfg.model_copy(update={"collect": collect}), runtime).collect(
                Path(tmp) / "r.h5", progress=False
            )
            seconds.append(time.perf_counter() - start)
            steps.append(metrics["collect/data/steps"])
    rates["collect"] = (steps[1] - steps[0]) / (seconds[1] - seconds[0])

    # fitness and evaluate: timed on a started pool whose workers each played a short warm-up episode.
    with open_pool(runtime, args.popsize * args.rollouts, init_worker, initargs) as pool:
        RealFitness(pool, args.rollouts, 5, lockstep=cfg.ctrl.lockstep)(candidates, 0)
        fitness = RealFitness(pool, args.rollouts, args.steps, lockstep=cfg.ctrl.lockstep)
        start = time.perf_counter()
        fitness(candidates, 1)
        rates["real-game fitness"] = fitness.last_steps / (time.perf_counter() - start)
    with open_pool(runtime, 2 * args.episodes, init_worker, initargs) as pool:
        evaluate_real(pool, candidates[0], args.episodes, 5, record=0, lockstep=cfg.ctrl.lockstep)
        start = time.perf_counter()
        summary, _, _ = evaluate_real(pool, candidates[0], args.episodes, args.steps, 0, lockstep=cfg.ctrl.lockstep)
        steps = args.episodes * summary["eval/real/steps_mean"] + args.episodes * args.steps  # random: never ends
        rates["evaluate"] = steps / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local process counts")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray runtime (0: no Ray)")
    parser.add_argument("--steps", type=int, default=200, help="steps per episode")
    parser.add_argument("--episodes", type=int, default=16, help="collect and evaluate episodes (tracks)")
    parser.add_argument("--popsize", type=int, default=16, help="real-game fitness candidates")
    parser.add_argument("--rollouts", type=int, default=2, help="real-game fitness tracks per candidate")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the best is kept")
    parser.add_argument("--lockstep", type=int, default=8, help="agent episodes per worker in lockstep (ctrl.lockstep)")
    args = parser.parse_args()

    params = {"collect": {"episodes": args.episodes, "max_steps": args.steps}, "ctrl": {"lockstep": args.lockstep}}
    cfg = WorldModelAgentConfig.model_validate(params)
    runs = [(f"{n} process{'es' if n > 1 else ''}", RuntimeSettings(workers=n, progress=False)) for n in args.workers]
    if args.ray_cpus:
        os.environ.pop("RAY_ADDRESS", None)  # a local runtime of exactly --ray-cpus CPUs
        start = time.perf_counter()
        connect_ray(args.ray_cpus)
        print(f"ray.init on {args.ray_cpus} local CPUs: {time.perf_counter() - start:.1f} s (not in the rates)")
        runs.append((f"Ray, {args.ray_cpus} CPUs", RuntimeSettings(backend="ray", workers=0, progress=False)))

    print(
        f"steps/s; {args.steps}-step episodes: collect {args.episodes} random-policy episodes, real-game fitness "
        f"{args.popsize} x {args.rollouts}, evaluate {args.episodes} tracks (agent + random); {os.cpu_count()} CPUs"
    )
    columns = ["start-up s", "collect", "real-game fitness", "evaluate", "fast env alone"]
    best: dict[str, dict[str, float]] = {}
    for repeat in range(args.repeats):  # backends interleaved, so a busy spell on a shared machine hits each
        for name, runtime in runs:
            rates = measure(runtime, cfg, args)
            workers = args.ray_cpus if runtime.backend == "ray" else runtime.workers
            rates["fast env alone"] = vector_rate(workers, 0, 1000)
            print(f"repeat {repeat + 1} {name}: " + ", ".join(f"{c} {v:.1f}" for c, v in rates.items()), flush=True)
            kept = best.setdefault(name, rates)
            best[name] = {c: (min if c == "start-up s" else max)(kept[c], v) for c, v in rates.items()}
    print(f"best of {args.repeats} (start-up: shortest)")
    print(f"{'backend':<16}" + "".join(f"{c:>20}" for c in columns))
    for name, rates in best.items():
        print(f"{name:<16}" + "".join(f"{rates[c]:>20.1f}" for c in columns))


if __name__ == "__main__":
    main()
