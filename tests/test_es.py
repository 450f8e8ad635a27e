"""wm/es.py: CMA-ES over the controller's flat parameters, with dream or real-game fitness; resumable."""

import math

import numpy as np
import pytest
import torch

from wm.agent import Agent, AgentModels
from wm.checkpoints import ResumeCache
from wm.config import ControllerConfig, CtrlConfig, parse_params
from wm.dream import DreamEnv
from wm.episodes import Episode, EpisodeTask, group_size, init_worker, make_env, play_tasks, run_episode
from wm.errors import WmError
from wm.es import ESSpec, RealFitness, dream_fitness, recombination_weights, recombine, run_cma_es
from wm.models.controller import ControllerSpec, EvolutionaryController
from wm.models.fsq import FSQ
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel
from wm.parallel import WorkerPool
from wm.seeding import Stream, int_seed, seed_everything, track_seed

from .conftest import tiny_params
from .test_dream import FSQ_CFG, WM_CFG, H, K, gas_rewarding_model

SPEC = ControllerSpec("linear", z_dim=FSQ_CFG.dim)


def steer_left_dream() -> DreamEnv:
    """The hand-set dream of test_dream, rewired so the reward is tanh(tanh(-4 * steering)) per step:
    the zero controller earns 0, full left lock earns ~0.76 a step."""
    model = gas_rewarding_model()
    with torch.no_grad():
        E = WM_CFG.embed_dim
        model.lstm.weight_ih_l0[2 * H, E + 1] = 0.0
        model.lstm.weight_ih_l0[2 * H, E + 0] = -4.0
    return DreamEnv(model, FSQ(FSQ_CFG.levels), torch.arange(K), 1, 1.0, 10, "cpu")


def _spec(tmp_path, generations: int, name: str = "cache", fingerprint: dict | None = None) -> ESSpec:
    cache = ResumeCache(tmp_path / name, "ctrl", fingerprint or {"test": 1})
    return ESSpec(popsize=8, sigma0=0.5, generations=generations, seed=3, cache=cache)


def test_cma_es_improves_dream_fitness(tmp_path):
    state = run_cma_es(_spec(tmp_path, 8), SPEC, dream_fitness(steer_left_dream(), SPEC, 0, 2))
    first, last = state["history"][0], state["history"][-1]
    assert last["ctrl/train/fitness_of_mean"] > first["ctrl/train/fitness_of_mean"] + 2.0
    assert state["best_fitness"] > 5.0  # 10 steps x ~0.76 at best
    assert state["best"].shape == (SPEC.num_params,) and state["best"].dtype == np.float32
    assert [row["generation"] for row in state["history"]] == list(range(1, 9))
    assert state["generation"] == 8


def test_history_rows_describe_each_generation(tmp_path):
    """fitness_* are the statistics of the population's scores, fitness_of_mean the mean's own score, and
    best_so_far the best of everything scored up to that generation (the mean included)."""
    seen: list[np.ndarray] = []

    def fitness(candidates, generation):
        scores = -np.abs(candidates).sum(axis=1)  # the zero vector is best
        seen.append(scores)
        return scores

    state = run_cma_es(_spec(tmp_path, 3), SPEC, fitness)
    best = -np.inf
    for row, scores in zip(state["history"], seen, strict=True):
        pop, of_mean = scores[:-1], scores[-1]
        assert len(pop) == 8
        assert row["ctrl/train/fitness_best"] == pop.max() and row["ctrl/train/fitness_mean"] == pytest.approx(
            pop.mean()
        )
        assert (
            row["ctrl/train/fitness_std"] == pytest.approx(pop.std()) and row["ctrl/train/fitness_of_mean"] == of_mean
        )
        best = max(best, pop.max(), of_mean)
        assert row["ctrl/train/best_so_far"] == best
    assert state["best_fitness"] == best
    assert -np.abs(state["best"]).sum() == pytest.approx(best, rel=1e-6)  # best holds the params that scored it


def test_dream_fitness_shares_worlds_within_a_generation_and_changes_them_across():
    dream = steer_left_dream()
    fit = dream_fitness(dream, SPEC, master_seed=4, rollouts=3)
    candidates = np.random.default_rng(0).normal(size=(5, SPEC.num_params))
    candidates[3] = candidates[1]
    scores = fit(candidates, 0)
    assert scores.shape == (5,) and scores.dtype == np.float64 and scores[3] == scores[1]
    expected = dream.evaluate_candidates(
        SPEC, torch.as_tensor(candidates, dtype=torch.float32), 3, int_seed(4, Stream.DREAM, 0)
    )
    np.testing.assert_array_equal(scores, expected.double().numpy())
    np.testing.assert_array_equal(fit(candidates, 0), scores)  # a pure function of (candidates, generation)


# ---------------------------------------------------------------- real-game fitness


class FakePool:
    """WorkerPool stand-in: plays no game; an episode's return is 1000 * (candidate id) + (track index) ** 2,
    where the candidate id is its first parameter. Records the tasks of every map call."""

    def __init__(self, workers: int = 1):
        self.workers = workers
        self.calls: list[list[EpisodeTask]] = []
        self.group_sizes: list[int] = []

    def map(self, fn, groups):
        assert fn is play_tasks
        groups = list(groups)
        self.calls.append([task for group in groups for task in group])
        self.group_sizes += [len(group) for group in groups]
        for group in groups:
            yield [self.play(task) for task in group]

    @staticmethod
    def play(task: EpisodeTask) -> Episode:
        stream, index = task.track
        assert stream == Stream.CTRL
        ret = 1000.0 * float(task.params[0]) + float(index) ** 2
        rewards = np.array([ret], np.float32)
        return Episode(np.zeros((1, 3), np.float32), rewards, np.zeros(1, bool), np.ones(1, bool), index)


@pytest.mark.parametrize(("candidates", "rollouts", "workers"), [(5, 3, 1), (4, 4, 1), (3, 1, 1), (4, 4, 3)])
def test_real_fitness_is_the_mean_over_each_candidates_own_tracks(candidates, rollouts, workers):
    pool = FakePool(workers)
    fit = RealFitness(pool, rollouts=rollouts, max_steps=77, lockstep=3)
    params = np.zeros((candidates, 6))
    params[:, 0] = np.arange(candidates)  # candidate id
    params[:, 1:] = np.random.default_rng(0).normal(size=(candidates, 5))
    for generation in (0, 1, 5):
        scores = fit(params, generation)
        tracks = [generation * rollouts + r for r in range(rollouts)]  # new tracks each generation
        expected = [np.mean([1000.0 * c + t**2 for t in tracks]) for c in range(candidates)]
        assert scores.shape == (candidates,)
        np.testing.assert_allclose(scores, expected, rtol=1e-6)
        tasks = pool.calls[-1]
        assert len(tasks) == candidates * rollouts
        size = group_size(len(tasks), workers, 3)  # at most ctrl.lockstep episodes, cut from the task list
        full, rest = divmod(len(tasks), size)
        assert pool.group_sizes[-(full + bool(rest)) :] == [size] * full + ([rest] if rest else [])
        # every candidate plays the same tracks of the CTRL stream, with its own params
        for c in range(candidates):
            mine = [t for t in tasks if t.params[0] == c]
            assert sorted(t.track for t in mine) == [(Stream.CTRL, i) for i in tracks]
            for t in mine:
                assert t.max_steps == 77 and t.params.dtype == np.float32
                np.testing.assert_array_equal(t.params, params[c].astype(np.float32))
    used = [{t.track for t in tasks} for tasks in pool.calls]
    assert all(a.isdisjoint(b) for i, a in enumerate(used) for b in used[i + 1 :])  # generations never share


@pytest.mark.parametrize(
    ("tasks", "workers", "lockstep", "size"),
    [
        (32, 2, 8, 8),
        (32, 16, 8, 2),
        (24, 2, 8, 6),
        (36, 2, 8, 6),
        (64, 2, 8, 8),
        (5, 8, 8, 1),
        (16, 1, 3, 3),
        (0, 2, 8, 1),
    ],
)
def test_groups_fill_the_workers_in_the_fewest_waves(tasks, workers, lockstep, size):
    """32 round episodes on 16 workers play 2 per worker, not 4 groups of 8 that leave 12 workers idle; on 2
    workers the 24 check episodes are 4 groups of 6 (2 per worker) rather than 8, 8, 8 (one worker plays two)."""
    assert group_size(tasks, workers, lockstep) == size
    waves = math.ceil(math.ceil(tasks / size) / workers)  # work items the busiest worker plays
    assert size <= lockstep and waves == math.ceil(tasks / (workers * lockstep))  # the fewest possible


def test_real_fitness_plays_the_ctrl_tracks_in_the_real_game():
    """Through a real (in-process) worker: the fitness is the mean return of the agent on the CTRL tracks of the
    generation, the same as playing those tracks by hand."""
    cfg = parse_params(tiny_params(ctrl={"use_hidden": True}))
    seed_everything(0)
    vae, world_model = FSQVAE(cfg.fsq_vae).eval(), WorldModel(cfg.world_model).eval()
    spec = ControllerSpec.from_config(cfg.controller)
    candidates = np.zeros((2, spec.num_params))
    candidates[0, -3:] = (0.0, 3.0, -3.0)  # full gas: visits tiles
    candidates[1, -3:] = (0.8, -3.0, -3.0)  # no gas, steering
    R, steps = 2, 25
    with WorkerPool(1, init_worker, (cfg, True, AgentModels.of(vae, cfg.controller, world_model))) as pool:
        scores = RealFitness(pool, R, steps, lockstep=cfg.ctrl.lockstep)(candidates, 1)
    env = make_env(cfg, fast=True)
    agent = Agent(vae, EvolutionaryController(cfg.controller), world_model)
    for c, params in enumerate(candidates):
        agent.set_params(params)
        returns = [run_episode(env, agent, track_seed(cfg.seed, Stream.CTRL, R + r), None, steps).ret for r in range(R)]
        assert scores[c] == pytest.approx(np.mean(returns), rel=1e-12)
    assert scores[0] > scores[1]


# ---------------------------------------------------------------- resuming


def test_resume_equals_uninterrupted(tmp_path):
    fit = dream_fitness(steer_left_dream(), SPEC, 0, 2)
    full = run_cma_es(_spec(tmp_path, 4, "a"), SPEC, fit)

    calls = {"n": 0}

    def dying(candidates, generation):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed during generation 3
        return fit(candidates, generation)

    with pytest.raises(KeyboardInterrupt):
        run_cma_es(_spec(tmp_path, 4, "b"), SPEC, dying)
    resumed = run_cma_es(_spec(tmp_path, 4, "b"), SPEC, fit)
    assert resumed["history"] == full["history"]
    np.testing.assert_array_equal(resumed["best"], full["best"])
    np.testing.assert_array_equal(resumed["es"].mean, full["es"].mean)

    # more generations continue a finished run exactly as if they had been asked for from the start
    longer = run_cma_es(_spec(tmp_path, 6, "a"), SPEC, fit)
    fresh = run_cma_es(_spec(tmp_path, 6, "c"), SPEC, fit)
    assert longer["history"] == fresh["history"]


def test_finished_run_is_not_rerun(tmp_path):
    fit = dream_fitness(steer_left_dream(), SPEC, 0, 2)
    done = run_cma_es(_spec(tmp_path, 2), SPEC, fit)
    seen: list[dict] = []

    def never(candidates, generation):
        raise AssertionError("a finished run played again")

    again = run_cma_es(_spec(tmp_path, 2), SPEC, never, on_generation=seen.append)
    assert again["history"] == done["history"]
    assert len(seen) == 1 and seen[0]["history"] == done["history"]  # its artefacts are rewritten once


def test_checkpoint_under_other_params_is_not_resumed(tmp_path, capsys):
    fit = dream_fitness(steer_left_dream(), SPEC, 0, 2)
    run_cma_es(_spec(tmp_path, 2), SPEC, fit)
    other = _spec(tmp_path, 2, fingerprint={"test": 2})
    assert other.cache.path != _spec(tmp_path, 2).cache.path  # other params, another checkpoint
    state = run_cma_es(other, SPEC, fit)
    assert "resuming" not in capsys.readouterr().out and len(state["history"]) == 2
    # a checkpoint of other params found under this key (copied by hand, a hash collision) is not trusted
    third = _spec(tmp_path, 2, fingerprint={"test": 3})
    third.cache.path.write_bytes(_spec(tmp_path, 2).cache.path.read_bytes())
    state = run_cma_es(third, SPEC, fit)
    assert "written under other params (test); starting fresh" in capsys.readouterr().out
    assert len(state["history"]) == 2
    # fewer generations than a checkpoint holds start fresh (the checkpoint cannot be rewound)
    state = run_cma_es(_spec(tmp_path, 1), SPEC, fit)
    assert "has 2 generations, more than the 1 asked; starting fresh" in capsys.readouterr().out
    assert len(state["history"]) == 1


def test_non_finite_fitness_is_a_clear_error(tmp_path):
    with pytest.raises(WmError, match="non-finite fitness"):
        run_cma_es(_spec(tmp_path, 2), SPEC, lambda c, g: np.full(len(c), np.nan))


def test_equal_runs_publish_identical_controllers(tmp_path):
    """Equal runs end in equal states, and the published controller (a DVC output) is byte-identical. (The resume
    checkpoints are not: pycma pickles wall-clock timers; they live outside DVC.)"""
    fit = dream_fitness(steer_left_dream(), SPEC, 0, 2)
    config = ControllerConfig(ctrl=CtrlConfig(kind="linear"), fsq=FSQ_CFG, wm=WM_CFG)
    assert ControllerSpec.from_config(config) == SPEC
    published = []
    for name in ("a", "b"):
        spec = _spec(tmp_path, 2, name)
        state = run_cma_es(spec, SPEC, fit)
        saved = spec.cache.load("generation", 2)["es_state"]
        assert saved["history"] == state["history"] and saved["generation"] == 2
        np.testing.assert_array_equal(saved["best"], state["best"])
        path = tmp_path / f"{name}.pt"
        meta = {"generations": state["generation"], "best_fitness": state["best_fitness"]}
        EvolutionaryController(config, state["best"]).publish(path, {"test": 1}, meta)
        published.append(path.read_bytes())
    assert published[0] == published[1]


def test_recombine_weights_the_better_half_by_rank():
    """CMA-ES's default recombination (Hansen 2016): weights ln((N + 1) / 2) - ln(i) on the i-th best of the
    better half, normalised; equal returns keep the input order; one candidate is its own mean.
    `recombination_weights` gives each input's weight."""
    rng = np.random.default_rng(0)
    params = rng.standard_normal((32, 5)).astype(np.float32)
    returns = rng.permutation(32).astype(np.float64)
    weights = np.log(33 / 2) - np.log(np.arange(1, 17))
    weights /= weights.sum()
    best_first = np.argsort(-returns)[:16]
    np.testing.assert_allclose(recombine(params, returns), weights @ params[best_first], rtol=1e-5, atol=1e-6)
    tied = np.array([1.0, 5.0, 5.0, 0.0])  # N = 4: mu = 2, weights 0.804 / 0.196 on candidates 1 then 2
    expected = 0.80416286 * params[1] + 0.19583714 * params[2]
    np.testing.assert_allclose(recombine(params[:4], tied), expected, rtol=1e-5)
    np.testing.assert_array_equal(recombine(params[:1], returns[:1]), params[0])
    # each input's weight (what the check reports per checked controller): the same weights, zero elsewhere
    per_input = np.zeros(32)
    per_input[best_first] = weights
    np.testing.assert_allclose(recombination_weights(returns), per_input, rtol=1e-12)
    np.testing.assert_allclose(recombination_weights(tied), [0.0, 0.80416286, 0.19583714, 0.0], rtol=1e-7)
    np.testing.assert_array_equal(recombination_weights(returns[:1]), [1.0])
