"""Proposals: they head for an off-centre optimum, hold ``fixed`` coordinates, never repeat a
running trial, and the acquisition pieces compute what they claim."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from scipy.stats import norm

from optimizer.science import space as space_mod
from optimizer.science.acquisition import (
    free_candidates,
    knowledge_gradient,
    log_expected_improvement,
    propose,
)
from optimizer.science.answer import compute_answer
from optimizer.science.space import ParamSpec
from optimizer.science.surrogate import Observation, Surrogate

SPACE = (ParamSpec(name="scaling_factor", low=0.25, high=4.0, log=True),
         ParamSpec(name="participation", low=0.1, high=1.0))
# s* = 2.8, p* = 0.25 in unit coordinates: near a corner, far from the centre.
OPTIMUM = np.array([math.log(2.8 / 0.25) / math.log(16.0), (0.25 - 0.1) / 0.9])


def _quadratic(params: Mapping[str, Any], rng: np.random.Generator) -> float:
    u = space_mod.encode(SPACE, params)
    return 0.4 - 0.5 * float(np.sum((u - OPTIMUM) ** 2)) + float(rng.normal(0.0, 0.03))


def _distance(params: Mapping[str, Any]) -> float:
    return float(np.linalg.norm(space_mod.encode(SPACE, params) - OPTIMUM))


def _design(seed: int, n: int = 5) -> tuple[list[Observation], np.random.Generator]:
    rng = np.random.default_rng(seed)
    return [Observation(number=i, params=d, value=_quadratic(d, rng), stderr=0.03)
            for i, d in enumerate(space_mod.design_points(SPACE, n, seed=seed))], rng


@pytest.mark.parametrize(("acquisition", "seed"), [("kg", 1), ("kg", 2), ("ei", 2)])
def test_proposals_move_toward_an_off_centre_optimum(acquisition: str, seed: int) -> None:
    obs, rng = _design(seed)
    start = float(np.mean([_distance(o.params) for o in obs]))
    distances = []
    for i in range(8):
        x = propose(SPACE, obs, seed=seed + i, acquisition=acquisition)
        distances.append(_distance(x))
        obs.append(Observation(number=len(obs), params=x, value=_quadratic(x, rng),
                               stderr=0.03))
    # Random proposals sit ~0.6 from the optimum (the design's mean distance here too).
    assert float(np.median(distances)) < min(0.35, 0.6 * start), distances
    answer = compute_answer(SPACE, obs, regions=False)
    assert answer.predicted is not None and _distance(answer.predicted.params) < 0.2


@pytest.mark.parametrize("acquisition", ["kg", "ei"])
def test_fixed_coordinates_hold_in_every_proposal(acquisition: str) -> None:
    space = (*SPACE, ParamSpec(name="heterogeneity", low=0.0, high=1.0))
    rng = np.random.default_rng(0)
    obs = []
    for i, d in enumerate(space_mod.design_points(space, 12, seed=0)):
        value = _quadratic(d, rng) - 0.2 * (d["heterogeneity"] - 0.5) ** 2
        obs.append(Observation(number=i, params=d, value=value, stderr=0.03))
    for h in (0.0, 0.3, 1.0):
        x = propose(space, obs, fixed={"heterogeneity": h}, acquisition=acquisition)
        assert x["heterogeneity"] == h and set(x) == {p.name for p in space}
        assert 0.25 <= x["scaling_factor"] <= 4.0 and 0.1 <= x["participation"] <= 1.0
    # Two coordinates pinned: the third is searched; all pinned: that very point.
    x = propose(space, obs, fixed={"heterogeneity": 0.3, "participation": 0.5})
    assert (x["heterogeneity"], x["participation"]) == (0.3, 0.5)
    pinned = {"scaling_factor": 2.0, "participation": 0.5, "heterogeneity": 0.3}
    assert propose(space, obs, fixed=pinned) == pinned


@pytest.mark.parametrize("seed", range(4))
def test_expected_improvement_in_a_fixed_slice_measures_against_that_slice(seed: int) -> None:
    # The optimum moves with h from OPTIMUM (h = 0) to the far side (h = 1), and h = 1 scores
    # 0.2 higher: against that slice's best, nothing at h = 0 looks like an improvement and
    # the proposal drifts to wherever the model is least sure.
    space = (*SPACE, ParamSpec(name="heterogeneity", low=0.0, high=1.0))
    far = np.array([0.2, 0.8])
    rng = np.random.default_rng(seed)
    obs = []
    for i, d in enumerate(space_mod.design_points(space, 24, seed=seed)):
        u = space_mod.encode(space, d)
        centre = OPTIMUM + (far - OPTIMUM) * u[2]
        value = 0.2 + 0.2 * u[2] - 0.5 * float(np.sum((u[:2] - centre) ** 2))
        obs.append(Observation(number=i, params=d, value=value + rng.normal(0.0, 0.02),
                               stderr=0.02))
    x = propose(space, obs, fixed={"heterogeneity": 0.0}, acquisition="ei", seed=seed)
    assert _distance(x) < 0.3


def test_fixed_rejects_unknown_names_and_values_outside_the_space() -> None:
    obs, _ = _design(0)
    with pytest.raises(ValueError, match="not in the space"):
        propose(SPACE, obs, fixed={"heterogeneity": 0.5})
    with pytest.raises(ValueError, match="outside"):
        propose(SPACE, obs, fixed={"participation": 1.5})
    with pytest.raises(ValueError, match="not one of"):
        free_candidates((*SPACE, ParamSpec(name="model", choices=("a", "b"))),
                        {"model": "c"}, per_axis=5, seed=0)
    with pytest.raises(ValueError, match="acquisition"):
        propose(SPACE, obs, acquisition="ucb")


def test_fixed_candidates_cover_only_the_free_coordinates() -> None:
    space = (*SPACE, ParamSpec(name="model", choices=("a", "b")))
    rows = free_candidates(space, {"participation": 0.4}, per_axis=7, seed=0)
    assert len(rows) == 7 * 2  # one free range axis times both choices
    assert {r["participation"] for r in rows} == {0.4}
    assert len({(r["scaling_factor"], r["model"]) for r in rows}) == 14
    assert [list(r) for r in rows[:1]] == [["scaling_factor", "participation", "model"]]


@pytest.mark.parametrize("acquisition", ["kg", "ei"])
def test_a_proposal_never_repeats_a_running_trial(acquisition: str) -> None:
    obs, _ = _design(3, n=6)
    pending: list[dict[str, Any]] = []
    for i in range(4):  # each proposal joins the running trials before the next one
        x = propose(SPACE, obs, pending=pending, seed=i, acquisition=acquisition)
        assert x not in pending
        pending.append(x)
    # On a 3 x 3 grid with 8 points running only the ninth is left.
    grid = space_mod.candidates(SPACE, per_axis=3)
    for left in (0, 4, 8):
        running = [g for i, g in enumerate(grid) if i != left]
        assert propose(SPACE, obs, pending=running, per_axis=3,
                       acquisition=acquisition) == grid[left]


def test_log_expected_improvement_matches_the_closed_form_and_stays_finite() -> None:
    mean = np.array([0.3, 0.1, 0.0, -0.2, -0.5, -1.0])
    sd = np.array([0.1, 0.2, 0.05, 0.1, 0.1, 0.05])
    z = mean / sd
    closed = np.log(sd * (z * norm.cdf(z) + norm.pdf(z)))
    np.testing.assert_allclose(log_expected_improvement(mean, sd, 0.0), closed, rtol=1e-9)
    # 50 SDs below the bar: plain EI is exactly 0.0 here, the log stays finite and ordered.
    far = log_expected_improvement(np.array([-5.0, -4.0]), np.array([0.1, 0.1]), 0.0)
    assert np.all(np.isfinite(far)) and far[0] < far[1] < -800.0
    # Far above the bar with a tiny SD: EI is the plain difference, no overflow.
    near_sure = log_expected_improvement(np.array([0.3]), np.array([1e-9]), 0.1)
    assert near_sure[0] == pytest.approx(math.log(0.2), rel=1e-9)


def test_knowledge_gradient_is_positive_and_smallest_where_the_model_is_sure() -> None:
    obs, _ = _design(0, n=6)
    # Ten replicates at one point pin the surface there; elsewhere it is unsure.
    sure = dict(obs[0].params)
    obs += [Observation(number=10 + i, params=sure, value=obs[0].value, stderr=0.03)
            for i in range(10)]
    surrogate = Surrogate(SPACE, obs)
    cands = space_mod.candidates(SPACE, per_axis=11)
    Xc = space_mod.encode_many(SPACE, [*cands, sure])
    kg = knowledge_gradient(surrogate, Xc, Xc[:-1], 0.03 ** 2)
    assert np.all(kg >= -1e-12) and kg.max() > 0.0
    assert kg[-1] < np.quantile(kg[:-1], 0.1)


def test_a_given_prior_mean_is_where_the_surface_reverts_far_from_the_data() -> None:
    rng = np.random.default_rng(4)
    rows = [{"scaling_factor": s, "participation": p} for s in (0.8, 1.0, 1.25)
            for p in (0.45, 0.55)]
    obs = [Observation(number=i, params=r, value=0.3 + 0.02 * float(rng.normal()), stderr=0.02)
           for i, r in enumerate(rows)]
    far = [{"scaling_factor": 4.0, "participation": 1.0}]
    worst = min(o.value for o in obs)
    average = float(np.mean([o.value for o in obs]))
    assert Surrogate(SPACE, obs, prior_mean=worst).predict(far)[0][0] == \
        pytest.approx(worst, abs=0.01)
    assert Surrogate(SPACE, obs).predict(far)[0][0] == pytest.approx(average, abs=0.01)


def test_pessimistic_proposals_stay_off_the_empty_corners() -> None:
    corner = []
    for seed in range(6):
        obs, _ = _design(seed, n=6)
        for pessimistic in (False, True):
            u = space_mod.encode(SPACE, propose(SPACE, obs, seed=seed, pessimistic=pessimistic))
            corner.append((pessimistic, bool(np.all((u < 1e-9) | (u > 1 - 1e-9)))))
    assert sum(c for p, c in corner if p) <= sum(c for p, c in corner if not p)
    assert sum(c for p, c in corner if p) <= 1
