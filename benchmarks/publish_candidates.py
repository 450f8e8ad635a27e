"""Score a finished run's last-round candidates in the real game: what would another publishing rule give?

    WM_CACHE_DIR=RUN/.cache/wm .venv/bin/python benchmarks/publish_candidates.py RUN OUT.json [--params P]

RUN is a folder where `dvc repro` ran with iterative rounds (a clone of the repo): its params.yaml (or --params,
e.g. the params of the run whose resume cache RUN holds), models/vae.pt and models/wm.pt (the upstream) and the
resume cache of its `train_ctrl` (WM_CACHE_DIR as the run had it). The rounds are resumed from that cache (the
collected episodes and world models are read back; an optimiser whose cache was cleared reruns, to the same
result) up to the check, which is skipped. Then two candidates play the seed's first --tracks evaluation tracks
with `evaluate`'s agent episodes (`eval.max_steps` each, on the runtime's workers), so the returns pair with the
run's plots/eval/returns.csv: the last round's dream-trained controller (`iterate.publish: last`) and the last
round's recombined start (the real-return recombination of the perturbed controllers the last round collected
with; it costs no check). Writes {candidate: [return per track]} to OUT.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from wm.agent import AgentModels
from wm.cli import load_config
from wm.config import vae_fingerprint, wm_fingerprint
from wm.episodes import EpisodeTask, init_worker, play_episodes
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel
from wm.parallel import open_pool
from wm.seeding import Stream
from wm.trainers.controller import ControllerTrainer


class _Candidates(Exception):
    """Raised in place of the check, carrying the last round's candidates."""

    def __init__(self, candidates: dict[str, np.ndarray]) -> None:
        super().__init__("check skipped")
        self.candidates = candidates


class CandidateTrainer(ControllerTrainer):
    def _check(self) -> None:
        last = len(self.round_controllers) - 1
        raise _Candidates(
            {"last": self.round_controllers[last][0].copy(), "last_recombined": self.recombined[-1].copy()}
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a folder where the pipeline ran with iterative rounds")
    parser.add_argument("out", type=Path, help="JSON file for the per-track returns")
    parser.add_argument("--params", type=Path, help="params file (default: RUN/params.yaml)")
    parser.add_argument("--tracks", type=int, default=32, help="evaluation tracks of 1000 steps")
    args = parser.parse_args()

    cfg = load_config(args.params or args.run / "params.yaml")
    assert cfg.iterate.rounds > 0 and cfg.iterate.recombine, "needs iterative rounds with iterate.recombine"
    trainer = CandidateTrainer(
        FSQVAE.from_file(args.run / "models/vae.pt", vae_fingerprint(cfg)),
        WorldModel.from_file(args.run / "models/wm.pt", wm_fingerprint(cfg)),
        cfg,
    )
    try:
        trainer.fit(args.run / "data/tokens.h5", metrics=None, plots=None)
    except _Candidates as found:
        candidates = found.candidates
    else:
        raise SystemExit("the rounds ended without reaching the check")
    # evaluate's agent episodes (wm.evaluate.evaluate_real) without its random baseline
    tasks = [
        EpisodeTask((Stream.EVAL, i), (Stream.EVAL, i), cfg.eval.max_steps, params)
        for params in candidates.values()
        for i in range(args.tracks)
    ]
    rt = trainer.runtime
    models = AgentModels.of(trainer.vae, cfg.controller, trainer.world_model)  # the last round's world model
    with open_pool(rt, len(tasks), init_worker, (cfg, rt.fast_env, models)) as pool:
        episodes = play_episodes(pool, tasks, "candidates", rt.progress, lockstep=cfg.ctrl.lockstep)
    returns = {}
    for k, name in enumerate(candidates):  # (candidate, track) order, as the tasks
        returns[name] = [float(ep.ret) for ep in episodes[k * args.tracks : (k + 1) * args.tracks]]
        print(f"{name}: {np.mean(returns[name]):.1f} over {args.tracks} tracks", flush=True)
    args.out.write_text(json.dumps(returns))


if __name__ == "__main__":
    main()
