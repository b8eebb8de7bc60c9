"""Pure pieces: the pass@k estimator, the synthetic landscape, the space encoding, the answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from optimizer.science import space as space_mod
from optimizer.science.answer import Observation, compute_answer
from optimizer.science.synthetic import Landscape, optimum_at, simulate
from optimizer.study.studyfile import ParamSpec
from trainer.evaluation.passk import pass_at_k, summarize

SPACE = (ParamSpec(name="scaling_factor", low=0.25, high=4.0, log=True),
         ParamSpec(name="participation", low=0.1, high=1.0))


@pytest.mark.parametrize(("n", "c", "k"), [(10, 0, 10), (10, 1, 10), (20, 3, 10), (20, 3, 1),
                                           (5, 5, 1), (200, 7, 10)])
def test_pass_at_k_matches_the_combinatorial_formula(n: int, c: int, k: int) -> None:
    expected = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_landscape_optimum_and_realistic_noise() -> None:
    s_star, p_star = optimum_at(0.7)  # about the h of a dirichlet(0.1) split
    land = Landscape(optimum_s=s_star, optimum_p=p_star)
    grid = space_mod.candidates(SPACE, per_axis=31)
    values = [land.expected_pass_at_k(g["scaling_factor"], g["participation"], k=10,
                                      n_problems=40, problem_seed=0) for g in grid]
    best = grid[int(np.argmax(values))]
    assert abs(math.log(best["scaling_factor"] / s_star)) < 0.1
    assert abs(best["participation"] - p_star) < 0.05
    assert 0.3 < max(values) < 0.5 and min(values) < 0.2  # SmolLM2-like pass@10 levels
    rng = np.random.default_rng(0)
    draws = [simulate(land, s_star, p_star, n=10, k=10, n_problems=40, problem_seed=0, rng=rng)
             for _ in range(200)]
    sd = float(np.std([d[0] for d in draws]))
    se = float(np.mean([d[1] for d in draws]))
    assert 0.04 < sd < 0.09 and 0.04 < se < 0.1  # "a standard error of several points"
    summary = summarize([10] * 40, draws[0][2], 10)
    assert summary.mean == draws[0][0]


def test_encode_decode_and_design() -> None:
    space = (*SPACE, ParamSpec(name="model", choices=("a", "b")))
    row = {"scaling_factor": 1.0, "participation": 0.55, "model": "b"}
    back = space_mod.decode(space, space_mod.encode(space, row))
    assert back["model"] == "b" and back["scaling_factor"] == pytest.approx(1.0)
    design = space_mod.design_points(space, 6, seed=3)
    assert len(design) == 6 and {d["model"] for d in design} == {"a", "b"}
    assert design == space_mod.design_points(space, 6, seed=3)
    assert all(0.25 <= d["scaling_factor"] <= 4.0 for d in design)


def _fill_distance(units: np.ndarray) -> float:
    """The largest distance from a point of a 41 x 41 grid to the nearest design point."""
    axis = np.linspace(0.0, 1.0, 41)
    grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    return float(np.sqrt(((grid[:, None, :] - units[None]) ** 2).sum(-1)).min(axis=1).max())


def _units(rows: list[dict[str, float]]) -> np.ndarray:
    return space_mod.encode_many(SPACE, rows)


def test_sliced_design_is_one_joint_design_dealt_to_the_slices() -> None:
    slices = [space_mod.sliced_design_points(SPACE, 3, n_slices=3, index=i, seed=5)
              for i in range(3)]
    assert slices == [space_mod.sliced_design_points(SPACE, 3, n_slices=3, index=i, seed=5)
                      for i in range(3)]  # every runner creating a study agrees
    assert all(len(s) == 3 for s in slices)
    joint = space_mod.design_points(SPACE, 9, seed=5)
    assert [slices[i % 3][i // 3] for i in range(9)] == joint  # disjoint, together the joint
    with pytest.raises(ValueError, match="slice 3"):
        space_mod.sliced_design_points(SPACE, 3, n_slices=3, index=3, seed=5)


def test_sliced_design_fills_the_space_better_than_draws_per_slice() -> None:
    joint, apart = [], []
    for seed in range(40):
        rows = [space_mod.sliced_design_points(SPACE, 3, n_slices=3, index=i, seed=seed)
                for i in range(3)]
        joint.append(_fill_distance(_units([r for s in rows for r in s])))
        own = [space_mod.design_points(SPACE, 3, seed=seed + i) for i in range(3)]
        apart.append(_fill_distance(_units([r for s in own for r in s])))
    assert np.mean(joint) < 0.93 * np.mean(apart)


def test_sliced_design_starts_the_slices_on_different_choices() -> None:
    space = (*SPACE, ParamSpec(name="model", choices=("a", "b", "c")))
    firsts = [space_mod.sliced_design_points(space, 3, n_slices=3, index=i, seed=0)
              for i in range(3)]
    assert [s[0]["model"] for s in firsts] == ["a", "b", "c"]
    assert all({r["model"] for r in s} == {"a", "b", "c"} for s in firsts)


def _observations(seed: int, n: int, land: Landscape) -> list[Observation]:
    rng = np.random.default_rng(seed)
    obs = []
    for i, d in enumerate(space_mod.design_points(SPACE, n, seed=seed)):
        v, se, _ = simulate(land, d["scaling_factor"], d["participation"], n=10, k=10,
                            n_problems=40, problem_seed=0, rng=rng)
        obs.append(Observation(number=i, params=d, value=v, stderr=se))
    return obs


def test_answer_interval_and_stop_rule() -> None:
    land = Landscape(optimum_s=1.0, optimum_p=0.5)
    stop = {"min_trials": 5, "epsilon": 0.02, "probability": 0.9}
    few = compute_answer(SPACE, _observations(0, 6, land), stop=stop)
    assert few.predicted is not None and few.stop is not None
    assert few.predicted.lower < few.predicted.mean < few.predicted.upper
    assert not few.stop.stop, few.stop.reason  # six noisy trials cannot pin it to 2 points
    many = compute_answer(SPACE, _observations(1, 64, land))
    assert many.predicted is not None
    assert many.predicted.upper - many.predicted.lower < few.predicted.upper - few.predicted.lower
    assert abs(math.log(many.predicted.params["scaling_factor"])) < 0.4
    assert compute_answer(SPACE, _observations(0, 2, land)).predicted is None
