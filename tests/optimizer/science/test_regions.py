"""Where the optimum is: the argmax region, the epsilon-optimal region, the level CI."""

from __future__ import annotations

import math

import numpy as np

from optimizer.science import space as space_mod
from optimizer.science.answer import compute_answer
from optimizer.science.space import ParamSpec
from optimizer.science.surrogate import Observation

SPACE = (ParamSpec(name="scaling_factor", low=0.25, high=4.0, log=True),
         ParamSpec(name="participation", low=0.1, high=1.0))


def _observations(surface, *, noise: float, seed: int = 0) -> list[Observation]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    points = space_mod.design_points(SPACE, 24, seed=seed)
    return [Observation(number=i, params=pt, stderr=noise,
                        value=surface(pt["scaling_factor"], pt["participation"])
                        + float(rng.normal(0.0, noise)))
            for i, pt in enumerate(points)]


def _bump(s: float, p: float) -> float:
    z = (math.log(s) - math.log(0.4)) / 0.5
    return 0.2 + 0.2 * math.exp(-0.5 * (z * z + ((p - 0.7) / 0.25) ** 2))


def test_argmax_region_holds_an_off_centre_optimum_and_is_narrower_than_the_space() -> None:
    ans = compute_answer(SPACE, _observations(_bump, noise=0.01), epsilon=0.02, level_se=0.03)
    assert ans.argmax_region is not None and ans.predicted is not None
    lo, hi = ans.argmax_region.bounds["scaling_factor"]
    assert lo <= 0.4 <= hi and hi / lo < 4.0  # the space spans a factor 16
    plo, phi = ans.argmax_region.bounds["participation"]
    assert plo <= 0.7 <= phi and phi - plo < 0.6
    # The level CI carries the between-problem SE; the comparison CI does not.
    pred = ans.predicted
    assert pred.level_lower is not None and pred.level_upper is not None
    assert pred.level_lower < pred.lower and pred.level_upper > pred.upper


def test_the_level_ci_stays_within_what_a_probability_can_be() -> None:
    # A high, noisy landscape (pass@10 near 0.9 with a between-problem SE of 0.12, as on
    # the quickstart's 14 problems): the normal interval would reach past 1.
    ans = compute_answer(SPACE, _observations(lambda s, p: 0.5 + _bump(s, p), noise=0.03),
                         epsilon=0.05, level_se=0.12)
    pred = ans.predicted
    assert pred is not None and pred.level_lower is not None and pred.level_upper is not None
    assert pred.mean + 1.96 * 0.12 > 1.0  # unclipped it would pass 1
    assert 0.0 <= pred.level_lower < pred.mean < pred.level_upper == 1.0


def test_a_flat_landscape_gets_a_wide_epsilon_region() -> None:
    ans = compute_answer(SPACE, _observations(lambda s, p: 0.3, noise=0.005), epsilon=0.03)
    region = ans.epsilon_region
    assert region is not None and region.n_points > 0
    lo, hi = region.bounds["scaling_factor"]
    plo, phi = region.bounds["participation"]
    assert lo <= 0.3 and hi >= 3.5 and plo <= 0.15 and phi >= 0.95
    assert region.describe().startswith("s in [")


def test_a_peaked_landscape_excludes_the_far_corner_from_the_epsilon_region() -> None:
    ans = compute_answer(SPACE, _observations(_bump, noise=0.005), epsilon=0.02)
    region = ans.epsilon_region
    assert region is not None and region.n_points > 0
    assert region.bounds["scaling_factor"][1] < 2.0  # s = 4 is 0.2 below the peak
