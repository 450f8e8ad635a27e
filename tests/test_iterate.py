"""Iterative training (wm/trainers/controller.py): rounds of collect -> retrain world model -> retrain
controller in the dream, on a tiny config: what each round collects, and resuming a killed round."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wm import checkpoints
from wm.agent import Agent
from wm.checkpoints import read_published
from wm.collect import DataCollector
from wm.config import parse_params
from wm.encoding import encode_rollouts
from wm.episodes import make_env, run_episode
from wm.errors import ConfigError
from wm.es import recombine
from wm.models.controller import EvolutionaryController
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel
from wm.parallel import WorkerPool, pool_workers
from wm.runtime import RuntimeSettings
from wm.seeding import Stream, numpy_rng, track_seed
from wm.trainers import controller as controller_module
from wm.trainers.controller import ControllerTrainer

from .conftest import tiny_params

ROUNDS = {"rounds": 2, "episodes": 3, "max_steps": 25, "noise": 0.5, "wm_epochs": 1}


def config(**iterate):
    return parse_params(tiny_params(iterate=ROUNDS | iterate, ctrl={"generations": 2, "max_steps": 20}))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Random-policy episodes encoded by an (untrained) VAE: the tokens round 0 dreams from."""
    root = tmp_path_factory.mktemp("iterate")
    cfg = config()
    DataCollector(cfg).collect(root / "rollouts.h5", progress=False)
    torch.manual_seed(0)
    vae = FSQVAE(cfg.fsq_vae).eval()
    encode_rollouts(vae, root / "rollouts.h5", root / "tokens.h5", 64, progress=False)
    return root / "tokens.h5", vae.state_dict()


def trainer(cfg, data, runtime: RuntimeSettings | None = None) -> ControllerTrainer:
    vae = FSQVAE(cfg.fsq_vae)
    vae.load_state_dict(data[1])
    torch.manual_seed(1)
    return ControllerTrainer(vae.eval(), WorldModel(cfg.world_model), cfg, runtime)


def replay(cfg, t: ControllerTrainer, params: np.ndarray, index: int, world_model: WorldModel) -> np.ndarray:
    """The actions an agent with these controller params takes on round track `index`, played again here."""
    agent = Agent(t.vae, EvolutionaryController(cfg.controller, params), world_model)
    seed = track_seed(cfg.seed, Stream.ROUND, index)
    return run_episode(make_env(cfg, True), agent, seed, None, cfg.iterate.max_steps).actions


def episode_returns(data) -> np.ndarray:
    """(E,) the real return of each stored episode of a round's tokens."""
    o, rewards = data.steps.step_offsets, data.steps.rewards
    return np.array([rewards[a:b].sum(dtype=np.float64) for a, b in zip(o[:-1], o[1:], strict=True)])


def count_games(monkeypatch) -> list[int]:
    """From now on, count the times the trainer plays the real game (a round's collection, the check): a
    one-item list, so the count stays readable after the calls."""
    played, original = [0], WorkerPool.map

    def counting_map(self, *args, **kwargs):
        played[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(WorkerPool, "map", counting_map)
    return played


def spy_pools(monkeypatch) -> list[dict]:
    """From now on, record each worker pool the trainer opens: {"exited": None until closed, then the type of
    the exception it was closed on, or "cleanly"}."""
    pools = []

    class SpyPool(WorkerPool):
        def __exit__(self, exc_type, *exc) -> None:
            pools[self.index]["exited"] = exc_type or "cleanly"
            super().__exit__(exc_type, *exc)

    def open_spy(runtime, most, initializer, initargs):
        pool = SpyPool(pool_workers(runtime, most), initializer, initargs)
        pool.index = len(pools)
        pools.append({"exited": None})
        return pool

    monkeypatch.setattr(controller_module, "open_pool", open_spy)
    return pools


def test_each_round_collects_with_the_previous_rounds_controller(data):
    cfg = config(publish="last")  # the real-game check after the rounds has tests of its own
    first = trainer(config(rounds=0), data)
    theta0 = first.fit(data[0]).params.numpy().copy()  # round 0 alone is the run without rounds
    t = trainer(cfg, data)
    t.fit(data[0])
    assert [r["round"] for r in t.rounds] == [1, 2] and len(t.round_data) == 2
    assert all(d.steps.num_episodes == 3 for d in t.round_data)
    round1 = t.round_data[0]
    a, b = round1.steps.step_offsets[:2]
    # episode 0 of round 1 is the round-0 controller itself, on track (ROUND, 0)
    np.testing.assert_array_equal(round1.steps.actions[a:b], replay(cfg, t, theta0, 0, first.world_model))
    # episode 1 is that controller perturbed by iterate.noise (stream ROUND, round 1, episode 1)
    noise = 0.5 * numpy_rng(cfg.seed, Stream.ROUND, 1, 1).standard_normal(theta0.shape).astype(np.float32)
    c, d = round1.steps.step_offsets[1:3]
    np.testing.assert_array_equal(round1.steps.actions[c:d], replay(cfg, t, theta0 + noise, 1, first.world_model))
    assert not np.array_equal(round1.steps.actions[c:d][:5], round1.steps.actions[a:b][:5])
    # rounds play their own tracks, never collected, training or evaluation tracks
    seeds = {int(s) for d in t.round_data for s in d.steps.track_seeds}
    assert seeds == {track_seed(cfg.seed, Stream.ROUND, i) for i in range(6)}
    assert t.real_steps == sum(int(d.steps.step_offsets[-1]) for d in [*t.round_data]) + int(
        first._tokens(data[0]).steps.step_offsets[-1]
    )
    # the round rows report the collected returns
    assert t.rounds[0]["collect_return_mean"] == pytest.approx(np.mean(episode_returns(round1)))


@pytest.mark.parametrize("publish", ["check_recombined", "recombined"])
def test_a_killed_round_resumes_to_the_same_agent(data, tmp_path, monkeypatch, publish):
    """Killed while retraining the world model of round 1 (its episodes collected), rerun: the round's
    episodes come from the resume cache, not the game again, and the published agent is byte-identical to
    an uninterrupted run's."""
    cfg = config(publish=publish)
    whole = trainer(cfg, data)
    whole.fit(data[0])
    whole.publish(tmp_path / "whole")

    monkeypatch.setenv("WM_CACHE_DIR", str(tmp_path / "killed-cache"))
    from wm.runtime import load_runtime

    load_runtime.cache_clear()
    original = controller_module.WorldModelTrainer.fit
    calls = {"fit": 0}

    def dying_fit(self, *args, **kwargs):
        calls["fit"] += 1
        if calls["fit"] == 1:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(controller_module.WorldModelTrainer, "fit", dying_fit)
    pools = spy_pools(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        trainer(cfg, data).fit(data[0])
    assert pools == [{"exited": KeyboardInterrupt}]  # the pool that collected round 1 stops with the run
    monkeypatch.setattr(controller_module.WorldModelTrainer, "fit", original)

    games = count_games(monkeypatch)
    resumed = trainer(cfg, data)
    resumed.fit(data[0])
    assert games[0] == 1 + (publish != "recombined")  # round 1's episodes from the cache; round 2 (and the check)
    resumed.publish(tmp_path / "resumed")
    for name in ("vae.pt", "wm.pt", "controller.pt"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert resumed.rounds == whole.rounds


@pytest.mark.parametrize("use_hidden", [False, True])
def test_one_worker_pool_serves_the_rounds_and_the_check(data, monkeypatch, use_hidden):
    """Starting a pool costs seconds (processes import torch and build envs), so one pool plays every round's
    collection and the check and closes when the fit ends; a controller that reads h gets a fresh pool for
    each game instead, since each round retrains the world model its workers run."""
    cfg = parse_params(tiny_params(iterate=ROUNDS, ctrl={"generations": 2, "max_steps": 20, "use_hidden": use_hidden}))
    pools = spy_pools(monkeypatch)
    trainer(cfg, data).fit(data[0])
    assert pools == [{"exited": "cleanly"}] * (3 if use_hidden else 1)  # 2 rounds' collections and the check


def test_the_rounds_are_the_same_on_two_worker_processes(data, tmp_path, monkeypatch):
    """The shared pool's 2 processes keep their envs from round to round: the same rounds and the same
    published agent as one in-process worker."""
    cfg = config()
    runs = {}
    for workers in (1, 2):
        t = trainer(cfg, data, RuntimeSettings(workers=workers, cache_dir=tmp_path / f"cache{workers}"))
        t.fit(data[0])
        t.publish(tmp_path / str(workers))
        runs[workers] = t
    assert runs[2].rounds == runs[1].rounds and runs[2].checks == runs[1].checks
    for one, two in zip(runs[1].round_data, runs[2].round_data, strict=True):
        np.testing.assert_array_equal(two.tokens, one.tokens)
        np.testing.assert_array_equal(two.steps.actions, one.steps.actions)
    for name in ("vae.pt", "wm.pt", "controller.pt"):
        assert (tmp_path / "2" / name).read_bytes() == (tmp_path / "1" / name).read_bytes(), name


def test_more_rounds_than_the_cache_keeps_all_resume(data, tmp_path, monkeypatch, capsys):
    """A run keeps every round's checkpoint even when it writes more than KEEP_RESUME (8 rounds write 9): a
    rerun with another iterate.publish resumes round 0's CMA-ES, each round's world model and CMA-ES, and
    collects nothing. Pruning them by use would make the rerun retrain round 0 and, as each retrained
    round pushes the next checkpoint out, every round after it."""
    monkeypatch.setenv("WM_CACHE_DIR", str(tmp_path / "cache"))
    from wm.runtime import load_runtime

    load_runtime.cache_clear()
    monkeypatch.setattr(checkpoints, "KEEP_RESUME", 1)
    trainer(config(publish="last"), data).fit(data[0])
    capsys.readouterr()
    games = count_games(monkeypatch)
    trainer(config(publish="checked"), data).fit(data[0])
    out = capsys.readouterr().out
    assert out.count("ctrl: resuming from") == 3 and out.count("wm: resuming from") == 2
    assert games[0] == 1  # the check alone played the game


def test_the_check_publishes_the_best_rounds_controller_by_real_return(data, tmp_path, monkeypatch):
    """iterate.publish: checked plays the last round's controller and the earlier ones with the best unperturbed
    collected episode on the same new tracks (stream CHECK) for iterate.check_steps, counts those steps, and
    publishes the best. The rounds themselves are the same as with publish: last and another check_steps,
    which reuses them from the resume cache."""
    cfg = config(  # the dream's controllers alone, checked on longer episodes than the rounds collect (25 steps)
        publish="checked", check_controllers=2, check_episodes=2, check_steps=35, recombine=False, dream_share=1.0
    )
    t = trainer(cfg, data)
    t.fit(data[0], metrics=tmp_path / "ctrl.json", plots=tmp_path / "plots")
    unperturbed = [row["collect_return_unperturbed"] for row in t.rounds]
    earlier = max(range(2), key=lambda r: (unperturbed[r], r))  # controllers 0, 1; ties to the later
    assert [row["round"] for row in t.checks] == [earlier, 2]
    world_model = t.world_model  # the last round's: the agent is checked as it is published
    steps = 0
    for row in t.checks:
        params = t.round_controllers[row["round"]][0]
        agent = Agent(t.vae, EvolutionaryController(cfg.controller, params), world_model)
        episodes = [
            run_episode(make_env(cfg, True), agent, track_seed(cfg.seed, Stream.CHECK, i), None, 35) for i in range(2)
        ]
        assert row["check_return_mean"] == pytest.approx(np.mean([ep.ret for ep in episodes]), abs=1e-4)
        steps += sum(ep.steps for ep in episodes)
    best = max(t.checks, key=lambda row: (row["check_return_mean"], row["round"]))
    assert [row["weight"] for row in t.checks] == [float(row is best) for row in t.checks]
    np.testing.assert_array_equal(t.controller.params.numpy(), t.round_controllers[best["round"]][0])
    collected = sum(int(d.steps.step_offsets[-1]) for d in t.round_data)
    assert t.real_steps == int(t._tokens(data[0]).steps.step_offsets[-1]) + collected + steps
    assert (tmp_path / "plots" / "check.csv").exists()

    games = count_games(monkeypatch)
    last = trainer(
        config(publish="last", check_controllers=2, check_episodes=2, check_steps=30, recombine=False, dream_share=1.0),
        data,
    )
    last.fit(data[0])
    assert games[0] == 0  # every round from the resume cache, and no check
    assert last.rounds == t.rounds and not last.checks
    np.testing.assert_array_equal(last.controller.params.numpy(), t.round_controllers[-1][0])


def test_the_check_picks_by_real_return_not_by_round(data, tmp_path, monkeypatch):
    """With check returns that favour an earlier round, that round's controller is published (params, model-file
    metadata, metrics), not the last one."""

    class FakeCheck:
        def __init__(self, *args, **kwargs):
            assert kwargs["stream"] == Stream.CHECK
            self.last_steps = 7

        def __call__(self, candidates, generation):
            return np.array([50.0] + [10.0] * (len(candidates) - 1))  # the earliest checked controller wins

    monkeypatch.setattr(controller_module, "RealFitness", FakeCheck)
    cfg = config(publish="checked", check_controllers=3, recombine=False, dream_share=1.0)
    t = trainer(cfg, data)
    t.fit(data[0], metrics=tmp_path / "ctrl.json")
    assert [row["round"] for row in t.checks] == [0, 1, 2]  # 2 rounds: every controller is checked
    np.testing.assert_array_equal(t.controller.params.numpy(), t.round_controllers[0][0])
    assert not np.array_equal(t.round_controllers[0][0], t.round_controllers[-1][0])
    metrics = json.loads((tmp_path / "ctrl.json").read_text())
    assert metrics["ctrl/check/round"] == 0 and metrics["ctrl/check/return_mean"] == 50.0
    assert metrics["ctrl/check/last_return_mean"] == 10.0
    t.publish(tmp_path / "agent")
    assert read_published(tmp_path / "agent" / "controller.pt", "controller").meta["published_round"] == 0


def test_round_checkpoints_are_keyed_by_the_rounds_params(data, tmp_path, monkeypatch):
    """Round r's world model is trained on data that depends on the controller's params (iterate.noise here):
    a run after another with different rounds' params, in the same resume cache, must equal the same run in an
    empty cache (it would resume the other run's retrained world model if the key held only wm params). And
    raising iterate.rounds continues the rounds already done."""
    from wm.runtime import load_runtime

    def run(cache: str, **iterate) -> ControllerTrainer:
        monkeypatch.setenv("WM_CACHE_DIR", str(tmp_path / cache))
        load_runtime.cache_clear()
        t = trainer(config(publish="last", **iterate), data)
        t.fit(data[0])
        return t

    run("shared", noise=0.5, rounds=1)
    after = run("shared", noise=0.1, rounds=1)
    fresh = run("fresh", noise=0.1, rounds=1)
    for a, b in zip(after.world_model.state_dict().values(), fresh.world_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert after.rounds == fresh.rounds

    games = count_games(monkeypatch)
    longer = run("fresh", noise=0.1, rounds=2)
    assert games[0] == 1  # only round 2 played the game
    assert longer.rounds[0] == fresh.rounds[0]


@pytest.mark.parametrize("optimizer", ["cmaes", "actor_critic"])
def test_recombine_starts_each_round_at_the_real_return_recombination(data, monkeypatch, optimizer):
    """iterate.recombine: round r's optimiser starts at the recombination (by real return) of the controllers that
    collected round r, not at the controller that collected them: CMA-ES's x0, the actor-critic's actor."""
    ctrl = {"optimizer": optimizer, "ac": {"updates": 2, "batch": 8, "horizon": 3, "warmup": 2, "eval_every": 2}}
    cfg = parse_params(
        tiny_params(
            iterate=ROUNDS | {"recombine": True, "dream_share": 1.0, "episodes": 4},
            ctrl={"generations": 2, "max_steps": 20} | ctrl,
        )
    )
    starts: list[np.ndarray | None] = []
    if optimizer == "cmaes":
        original = controller_module.run_cma_es

        def spy(es_spec, *args, **kwargs):
            starts.append(None if es_spec.x0 is None else np.array(es_spec.x0, np.float32))
            return original(es_spec, *args, **kwargs)

        monkeypatch.setattr(controller_module, "run_cma_es", spy)
    else:
        original = controller_module.ActorCriticTrainer.fit

        def spy(self, *args, **kwargs):
            starts.append(self.model.actor.detach().cpu().numpy().copy())
            return original(self, *args, **kwargs)

        monkeypatch.setattr(controller_module.ActorCriticTrainer, "fit", spy)
    t = trainer(cfg, data)
    t.fit(data[0])
    assert len(starts) == 3  # round 0 and the 2 rounds
    for r, round_data in enumerate(t.round_data, start=1):
        collector = t.round_controllers[r - 1][0]
        noise = [np.zeros_like(collector)] + [
            0.5 * numpy_rng(cfg.seed, Stream.ROUND, r, i).standard_normal(collector.shape).astype(np.float32)
            for i in (1, 2, 3)
        ]
        returns = episode_returns(round_data)
        assert len(set(returns)) == 4  # distinct returns: the order matters
        expected = recombine(collector[None] + np.stack(noise), returns)  # 2 of 4 episodes: never the collector
        np.testing.assert_array_equal(starts[r], expected)
        assert not np.array_equal(starts[r], collector)


def test_dream_share_plays_the_rest_of_a_round_around_its_recombined_start(data):
    """iterate.dream_share: 0.5 of 4: round 2's episodes 0-1 play around the dream's controller of round 1, 2-3
    around the recombined start that controller's training began from (each centre once unperturbed, episodes
    0 and 2); the next recombination weighs all four by real return, and the round row says how each centre did.
    With iterate.first_centre: dream, round 1 plays around the dream's controller alone."""
    cfg = config(recombine=True, dream_share=0.5, episodes=4, publish="last", first_centre="dream")
    t = trainer(cfg, data)
    t.fit(data[0])
    dreamed, start, stored = t.round_controllers[1][0], t.recombined[0], t.round_data[1].steps
    assert not np.array_equal(dreamed, start)
    noise = [
        0.5 * numpy_rng(cfg.seed, Stream.ROUND, 2, i).standard_normal(start.shape).astype(np.float32) for i in (1, 3)
    ]
    params = np.stack([dreamed, dreamed + noise[0], start, start + noise[1]])  # (E, P)
    o = stored.step_offsets
    for i in range(4):  # round 2 plays round tracks 4..7
        np.testing.assert_array_equal(stored.actions[o[i] : o[i + 1]], replay(cfg, t, params[i], 4 + i, t.world_model))
    returns = episode_returns(t.round_data[1])
    np.testing.assert_array_equal(t.recombined[1], recombine(params, returns))
    row = t.rounds[1]
    assert row["collect_return_dream_mean"] == pytest.approx(returns[:2].mean())
    assert row["collect_return_start_mean"] == pytest.approx(returns[2:].mean())
    assert row["collect_return_unperturbed"] == pytest.approx(returns[0])
    assert t.rounds[0]["collect_return_start_mean"] is None  # round 1: one centre


def test_first_centre_initial_plays_half_of_round_1_around_the_zero_controller(data):
    """iterate.first_centre: initial: round 1's episodes 2-3 of 4 play around where round 0's CMA-ES began (the
    zero controller, episode 2 unperturbed) instead of around the dream's controller; the first recombination
    weighs all four, and round 1's row reports both centres."""
    cfg = config(recombine=True, dream_share=0.5, episodes=4, publish="last", rounds=1, first_centre="initial")
    t = trainer(cfg, data)
    t.fit(data[0])
    dreamed, stored = t.round_controllers[0][0], t.round_data[0].steps
    zero = np.zeros_like(dreamed)
    assert np.abs(dreamed).max() > 0
    noise = [
        0.5 * numpy_rng(cfg.seed, Stream.ROUND, 1, i).standard_normal(zero.shape).astype(np.float32) for i in (1, 3)
    ]
    params = np.stack([dreamed, dreamed + noise[0], zero, zero + noise[1]])  # (E, P)
    o = stored.step_offsets
    for i in range(4):  # round 1 plays round tracks 0..3
        np.testing.assert_array_equal(stored.actions[o[i] : o[i + 1]], replay(cfg, t, params[i], i, t.world_model))
    returns = episode_returns(t.round_data[0])
    np.testing.assert_array_equal(t.recombined[0], recombine(params, returns))
    row = t.rounds[0]
    assert row["collect_return_dream_mean"] == pytest.approx(returns[:2].mean())
    assert row["collect_return_start_mean"] == pytest.approx(returns[2:].mean())


def test_dream_share_and_publish_recombined_need_the_recombination():
    with pytest.raises(ConfigError, match="iterate.dream_share < 1 .* iterate.recombine: true"):
        config(recombine=False, dream_share=0.5)
    with pytest.raises(ConfigError, match="iterate.publish: recombined .* iterate.recombine: true"):
        config(recombine=False, dream_share=1.0, publish="recombined")
    assert config(recombine=False, dream_share=1.0).iterate.dream_episodes == 3
    assert config(dream_share=0.0).iterate.dream_episodes == 0 and config(dream_share=0.5).iterate.dream_episodes == 2


@pytest.mark.parametrize("publish", ["checked", "check_recombined"])
def test_the_check_plays_every_recombined_start(data, tmp_path, monkeypatch, publish):
    """With iterate.recombine the check plays each round's recombined start beside the rounds' dream controllers
    (the dream training can lose what the recombination gained), in the order the rounds made them. checked
    publishes the best (here round 1's recombined start); check_recombined the recombination of all by check
    return, with each one's weight in check.csv (params, metrics, model-file metadata)."""
    played: list[np.ndarray] = []
    returns = np.array([10.0, 50.0, 20.0, 40.0, 30.0])  # round 1's recombined start scores best

    class FakeCheck:
        def __init__(self, *args, **kwargs):
            self.last_steps = 7

        def __call__(self, candidates, generation):
            played.append(candidates)
            return returns

    cfg = config(recombine=True, check_controllers=3, publish=publish)
    t = trainer(cfg, data)
    monkeypatch.setattr(controller_module, "RealFitness", FakeCheck)
    t.fit(data[0], metrics=tmp_path / "ctrl.json", plots=tmp_path / "plots")
    order = [(row["round"], row["source"]) for row in t.checks]
    assert order == [(0, "dream"), (1, "recombined"), (1, "dream"), (2, "recombined"), (2, "dream")]
    expected = [t.round_controllers[0][0], t.recombined[0], t.round_controllers[1][0], t.recombined[1]]
    np.testing.assert_array_equal(played[0], np.stack([*expected, t.round_controllers[2][0]]))
    weights = [row["weight"] for row in t.checks]
    if publish == "checked":
        assert weights == [0.0, 1.0, 0.0, 0.0, 0.0]
        np.testing.assert_array_equal(t.controller.params.numpy(), t.recombined[0])
    else:
        assert weights[1] > weights[3] > 0 and weights[0] == weights[2] == weights[4] == 0.0  # the better 2 of 5
        assert sum(weights) == pytest.approx(1.0)
        np.testing.assert_array_equal(t.controller.params.numpy(), recombine(played[0], returns))
        assert t.state["best_fitness"] is None  # never trained in a dream
        check_csv = (tmp_path / "plots" / "check.csv").read_text().splitlines()
        assert check_csv[0].split(",")[-1] == "weight" and float(check_csv[2].split(",")[-1]) == pytest.approx(
            weights[1], rel=1e-5
        )
    metrics = json.loads((tmp_path / "ctrl.json").read_text())
    assert metrics["ctrl/check/round"] == 1 and metrics["ctrl/check/recombined"] == 1
    assert metrics["ctrl/check/weight"] == pytest.approx(weights[1], rel=1e-9)
    t.publish(tmp_path / "agent")
    meta = read_published(tmp_path / "agent" / "controller.pt", "controller").meta
    assert meta["published_round"] == 1 and meta["published_source"] == "recombined"
    assert meta["published_weight"] == weights[1]


@pytest.mark.parametrize("optimizer", ["cmaes", "actor_critic"])
def test_publish_recombined_publishes_the_last_rounds_recombination_unchecked(data, tmp_path, monkeypatch, optimizer):
    """iterate.publish: recombined publishes the last round's recombination of its collected controllers by real
    return: no check, and neither the world model nor the controller trains after it (the published M is the
    one its episodes were played with). Every round before is the check's run's, from the resume cache."""

    def config(publish: str):
        ac = {"updates": 2, "batch": 8, "horizon": 3, "warmup": 2, "eval_every": 2}
        ctrl = {"generations": 2, "max_steps": 20, "optimizer": optimizer, "ac": ac}
        return parse_params(tiny_params(iterate=ROUNDS | {"publish": publish}, ctrl=ctrl))

    checked = trainer(config("check_recombined"), data)
    checked.fit(data[0])
    games, wm_fits = count_games(monkeypatch), []
    original = controller_module.WorldModelTrainer.fit
    monkeypatch.setattr(
        controller_module.WorldModelTrainer, "fit", lambda self, *a, **k: wm_fits.append(1) or original(self, *a, **k)
    )
    t = trainer(config("recombined"), data)
    t.fit(data[0], metrics=tmp_path / "ctrl.json", plots=tmp_path / "plots")
    assert games[0] == 0  # both rounds' episodes from the resume cache, and no check
    assert len(wm_fits) == 1 and len(t.round_controllers) == 2  # rounds 0 and 1 trained; round 2 only collected
    assert not t.checks and t.state["best_fitness"] is None
    np.testing.assert_array_equal(t.recombined[-1], checked.recombined[-1])
    np.testing.assert_array_equal(t.controller.params.numpy(), checked.recombined[-1])
    assert t.rounds[0] == checked.rounds[0]
    last, full = t.rounds[1], checked.rounds[1]
    assert last["wm_val_ce"] is None and last["dream_fitness"] is None
    assert {k: v for k, v in last.items() if v is not None} == {k: full[k] for k, v in last.items() if v is not None}
    assert t.real_steps == last["real_steps"] < checked.real_steps  # the rounds' steps; the check's are not used
    metrics = json.loads((tmp_path / "ctrl.json").read_text())
    assert metrics["ctrl/total/rounds"] == 2 and "ctrl/round/wm_val_ce" not in metrics
    assert not any(k.startswith("ctrl/check/") for k in metrics)
    t.publish(tmp_path / "agent")
    meta = read_published(tmp_path / "agent" / "controller.pt", "controller").meta
    assert (meta["published_round"], meta["published_source"], meta["published_weight"]) == (2, "recombined", 1.0)
    assert read_published(tmp_path / "agent" / "wm.pt", "wm").meta["rounds"] == 1
