import numpy as np
import pytest
import torch

from wm.dream import DreamEnv
from wm.es import ESSpec, dream_fitness, run_cma_es
from wm.models.controller import ControllerSpec
from wm.models.fsq import FSQ

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


def _spec(tmp_path, generations: int, name: str = "ctrl.pt") -> ESSpec:
    return ESSpec(
        popsize=8, sigma0=0.5, generations=generations, seed=3, checkpoint=tmp_path / name, fingerprint={"test": 1}
    )


def test_cma_es_improves_dream_fitness(tmp_path):
    state = run_cma_es(_spec(tmp_path, 8), SPEC, dream_fitness(steer_left_dream(), SPEC, 0, 2))
    first, last = state["history"][0], state["history"][-1]
    assert last["ctrl/train/fitness_of_mean"] > first["ctrl/train/fitness_of_mean"] + 2.0
    assert state["best_fitness"] > 5.0  # 10 steps x ~0.76 at best
    assert state["best"].shape == (SPEC.num_params,) and state["best"].dtype == np.float32


def test_resume_equals_uninterrupted(tmp_path):
    fit = dream_fitness(steer_left_dream(), SPEC, 0, 2)
    full = run_cma_es(_spec(tmp_path, 4, "a.pt"), SPEC, fit)

    calls = {"n": 0}

    def dying(candidates, generation):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed during generation 3
        return fit(candidates, generation)

    with pytest.raises(KeyboardInterrupt):
        run_cma_es(_spec(tmp_path, 4, "b.pt"), SPEC, dying)
    resumed = run_cma_es(_spec(tmp_path, 4, "b.pt"), SPEC, fit)
    assert resumed["history"] == full["history"]
    np.testing.assert_array_equal(resumed["best"], full["best"])
    np.testing.assert_array_equal(resumed["es"].mean, full["es"].mean)

    # more generations continue a finished run exactly as if they had been asked for from the start
    longer = run_cma_es(_spec(tmp_path, 6, "a.pt"), SPEC, fit)
    fresh = run_cma_es(_spec(tmp_path, 6, "c.pt"), SPEC, fit)
    assert longer["history"] == fresh["history"]


def test_checkpoint_under_other_params_is_not_resumed(tmp_path, capsys):
    fit = dream_fitness(steer_left_dream(), SPEC, 0, 2)
    run_cma_es(_spec(tmp_path, 2), SPEC, fit)
    other = ESSpec(
        popsize=8, sigma0=0.5, generations=2, seed=3, checkpoint=tmp_path / "ctrl.pt", fingerprint={"test": 2}
    )
    state = run_cma_es(other, SPEC, fit)
    assert "trained under other params (test); starting fresh" in capsys.readouterr().out
    assert len(state["history"]) == 2


def test_non_finite_fitness_is_a_clear_error(tmp_path):
    from wm.utils import WmError

    with pytest.raises(WmError, match="non-finite fitness"):
        run_cma_es(_spec(tmp_path, 2), SPEC, lambda c, g: np.full(len(c), np.nan))


def test_equal_runs_write_identical_checkpoints(tmp_path):
    fit = dream_fitness(steer_left_dream(), SPEC, 0, 2)
    run_cma_es(_spec(tmp_path, 2, "a.pt"), SPEC, fit)
    run_cma_es(_spec(tmp_path, 2, "b.pt"), SPEC, fit)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
