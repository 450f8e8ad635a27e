"""The actor-critic trained in one fixed dream, then scored in the real game: does its dream return transfer?

    .venv/bin/python benchmarks/ac_fixed_dream.py RUN -S ctrl.kind=mlp -S ctrl.use_hidden=true \
        -S ctrl.optimizer=actor_critic -S ctrl.ac.actor_lr=0.01
    .venv/bin/python benchmarks/ac_fixed_dream.py RUN --init RUN/models/agent/controller.pt \
        -S ctrl.optimizer=actor_critic
    .venv/bin/python benchmarks/ac_fixed_dream.py RUN --cmaes

RUN is a folder where the default pipeline has run (`dvc repro`, or a clone of the repo): its params.yaml (seed
included), the last world model and VAE (models/agent) and all its data (data/tokens.h5 and the rounds'
data/rounds/tokens.h5). `-S key=value` overrides its params as `dvc exp run -S` does (`ctrl.*` only matters).
The actor-critic runs `ctrl.ac.updates` updates in the dream `train_ctrl` would build from them (from scratch, or
from a published controller of the same spec with --init); with --cmaes, the optimiser control, CMA-ES runs
instead as a round of `train_ctrl` runs it (`ctrl.popsize`, `sigma0`, `generations`, `rollouts`; from the zero
controller or --init) in the same dream, its best candidate measured on the actor-critic's measurement dreams.
`--streams N` draws the optimiser's random numbers from round N's streams, another sample of the same run (the
actor-critic's measurement dreams are round N's too; CMA-ES's best is measured on round 0's).
Then the controller plays the first --tracks evaluation tracks of the seed (the tracks `evaluate` scores first,
so the result pairs with the run's own plots/eval/returns.csv). Prints one JSON line: the dream return at each
measurement, the real return per track and the training time (CMA-ES's generation lines go to stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from wm.agent import AgentModels
from wm.checkpoints import ResumeCache, read_published
from wm.config import parse_params
from wm.datafiles import concat_tokens, load_tokens
from wm.dream import ContextStarts, controller_dream
from wm.episodes import init_worker
from wm.es import ESSpec, dream_fitness, run_cma_es
from wm.evaluate import evaluate_real
from wm.models.controller import ControllerSpec
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel
from wm.parallel import WorkerPool
from wm.trainers.actor_critic import ActorCriticTrainer


def override(params: dict, assignment: str) -> None:
    """Set a dotted key of the params dict to a YAML value: `ctrl.ac.actor_lr=0.01`."""
    key, _, value = assignment.partition("=")
    *parents, leaf = key.split(".")
    node = params
    for name in parents:
        node = node[name]
    if leaf not in node:
        raise SystemExit(f"-S {assignment}: params.yaml has no key {key}")
    node[leaf] = yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a folder where the default pipeline has run")
    parser.add_argument("-S", dest="sets", action="append", default=[], help="key=value params override")
    parser.add_argument("--init", type=Path, help="start the actor at this published controller.pt")
    parser.add_argument("--cmaes", action="store_true", help="CMA-ES in the same dream instead of the actor-critic")
    parser.add_argument("--streams", type=int, default=0, help="names the optimiser's random streams, as a round does")
    parser.add_argument("--tracks", type=int, default=16, help="evaluation tracks of 1000 steps")
    args = parser.parse_args()

    raw = yaml.safe_load((args.run / "params.yaml").read_text())
    for assignment in args.sets:
        override(raw, assignment)
    cfg = parse_params(raw)
    c = cfg.ctrl
    world_model = WorldModel.from_published(read_published(args.run / "models/agent/wm.pt", "wm"))
    vae = FSQVAE.from_published(read_published(args.run / "models/agent/vae.pt", "vae"))
    parts = [args.run / "data/tokens.h5", args.run / "data/rounds/tokens.h5"]
    data = concat_tokens([load_tokens(p) for p in parts if p.is_file()])
    dream = controller_dream(world_model, ContextStarts.of_controller(data, c), c, c.max_steps)
    spec = ControllerSpec.from_config(cfg.controller)
    trainer = ActorCriticTrainer(
        spec, c.ac, cfg.fsq.dim + cfg.wm.hidden, cfg.seed, torch.device("cpu"), args.streams, False
    )
    if args.init is not None:
        with torch.no_grad():
            trainer.model.actor.copy_(read_published(args.init, "controller").state_dict["params"])

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        if args.cmaes:
            x0 = trainer.model.actor.detach().double().numpy() if args.init is not None else None
            key = (args.streams,) if args.streams else ()  # a round's key
            es = ESSpec(c.popsize, c.sigma0, c.generations, cfg.seed, ResumeCache(Path(cache), "cmaes", {}), x0, key)
            with contextlib.redirect_stdout(sys.stderr):
                state = run_cma_es(es, spec, dream_fitness(dream, spec, cfg.seed, c.rollouts, key))
            with torch.no_grad():
                trainer.model.actor.copy_(torch.from_numpy(state["best"]))
            history = [{"ctrl/train/dream_return": trainer.measure(dream, 0)}]
        else:
            history = trainer.fit(dream, data, ResumeCache(Path(cache), "ac_fixed_dream", {}), run=args.streams)
    seconds = time.perf_counter() - t0
    actor = trainer.model.actor.detach().numpy().copy()
    with WorkerPool(1, init_worker, (cfg, True, AgentModels.of(vae, cfg.controller, world_model))) as pool:
        metrics, rows, _ = evaluate_real(pool, actor, args.tracks, 1000, 0, lockstep=c.lockstep)
    real = np.array([r["agent"] for r in rows])
    print(
        json.dumps(
            {
                "run": str(args.run),
                "sets": args.sets,
                "optimizer": "cmaes" if args.cmaes else "actor_critic",
                "streams": args.streams,
                "init": None if args.init is None else str(args.init),
                "threads": os.environ.get("OMP_NUM_THREADS"),
                "train_s": round(seconds, 1),
                "dream_return": [round(h["ctrl/train/dream_return"], 1) for h in history],
                "std": None if args.cmaes else round(history[-1]["ctrl/train/std"], 3),
                "real_mean": round(float(real.mean()), 1),
                "real": [round(float(r), 1) for r in real],
            }
        )
    )


if __name__ == "__main__":
    main()
