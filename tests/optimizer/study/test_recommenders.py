"""The study's GP answer beats the observed best trial where noise is comparable to effects.

The scenario of ``tests/benchmarks/bench_recommenders.py --n-trials 20 --startup 20``
(measured there on full studies through the runner): the CPU quickstart's evaluation
size (40 problems, n = 10, k = 10), a 20-trial study that is all space-filling (Sobol)
design, common random numbers (every trial shares the evaluation seed), and synthetic
surfaces with ``lift = 0.8``: a true pass@10 range of ~0.10 over the space against a
trial-vs-trial noise SD of ~0.03, the quickstart's regime. Off-centre optima: iid at
s* = 2.8, p* = 0.25, dirichlet(0.1) at s* = 0.35, p* = 0.75.

The trials are simulated directly (``simulate``, the noise model, ``compute_answer``:
what a study's answer runs on) rather than through Optuna and SQLite, to fit in the
default suite. Three recommenders are scored by the bound |ln(s_hat/s*)| <= 0.5 and
|p_hat - p*| <= 0.2 on the same trials: the GP answer, the observed best trial (biased
to lucky draws: the winner's curse) and a constant guess (s = 1, p = 0.55).
"""

from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from optimizer.science import space as space_mod
from optimizer.science.answer import Observation, compute_answer
from optimizer.science.noise import estimate_noise, per_problem_scores
from optimizer.science.space import ParamSpec
from optimizer.science.synthetic import Landscape, noise_seed, simulate

TRUTH = {"iid": (2.8, 0.25), "dirichlet-0.1": (0.35, 0.75)}
CONSTANT = {"scaling_factor": 1.0, "participation": 0.55}
SPACE = (ParamSpec(name="scaling_factor", low=0.25, high=4.0, log=True),
         ParamSpec(name="participation", low=0.1, high=1.0))
SEEDS = range(12)  # x 2 distributions = 24 studies
N_TRIALS, PROBLEMS, SAMPLES, K, LIFT = 20, 40, 10, 10, 0.8


def _within(params: dict[str, Any], truth: tuple[float, float]) -> bool:
    """|ln(s_hat / s*)| <= 0.5 (within x/÷ 1.65) and |p_hat - p*| <= 0.2."""
    return (abs(math.log(params["scaling_factor"] / truth[0])) <= 0.5
            and abs(params["participation"] - truth[1]) <= 0.2)


def _one_seed(seed: int) -> list[dict[str, Any]]:
    """One seed's two studies (one per distribution), each recommender's pick checked."""
    rows = []
    for label, truth in TRUTH.items():
        land = Landscape(optimum_s=truth[0], optimum_p=truth[1], lift=LIFT)
        design = space_mod.design_points(SPACE, N_TRIALS, seed=seed)
        values, counts = [], []
        for params in design:
            # Training noise per configuration, sampling luck shared by the study (CRN).
            rng = np.random.default_rng(noise_seed(seed, {**params, "distribution": label}))
            value, _, correct = simulate(land, params["scaling_factor"], params["participation"],
                                         n=SAMPLES, k=K, n_problems=PROBLEMS, problem_seed=0,
                                         rng=rng, crn_seed=seed)
            values.append(value)
            counts.append(correct)
        noise = estimate_noise(per_problem_scores(counts, n=SAMPLES, k=K)).trial_sd
        obs = [Observation(number=i, params=p, value=v, stderr=noise)
               for i, (p, v) in enumerate(zip(design, values, strict=True))]
        ans = compute_answer(SPACE, obs, seed=seed, regions=False)
        assert ans.predicted is not None and ans.observed_best is not None
        rows.append({"seed": seed, "label": label,
                     "gp": _within(dict(ans.predicted.params), truth),
                     "observed": _within(dict(ans.observed_best.params), truth),
                     "constant": _within(CONSTANT, truth),
                     "picks": (dict(ans.predicted.params), dict(ans.observed_best.params))})
    return rows


def test_gp_answer_beats_the_observed_best_and_a_constant_guess() -> None:
    """On 24 studies the GP answer must be within the bound in >= 75% of them (18) and in
    at least 4 more than the observed best; the constant guess in none.

    Why this margin: the benchmark measured 37/40 (GP) against 27/40 (observed best) on
    full studies, ~22 against ~16 expected here (these seeds give 20 against 14). Two
    recommenders of equal skill differ by >= 4 only when their discordant studies split
    unevenly (of 8 discordant studies >= 6:2, one-sided binomial p = 0.14; of 6, 5:1 or
    6:0, p = 0.11), so +4 is a clear margin for 24 studies, yet leaves room for the luck
    of the seeds. Recommending the observed best fails it (+0, 14/24).
    """
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        rows = [r for rs in pool.map(_one_seed, SEEDS) for r in rs]
    gp, observed = sum(r["gp"] for r in rows), sum(r["observed"] for r in rows)
    constant = sum(r["constant"] for r in rows)
    detail = f"GP {gp}/{len(rows)}, observed best {observed}/{len(rows)}: {rows}"
    assert constant == 0, f"the bound does not bite: constant within it in {constant}"
    assert gp >= 0.75 * len(rows), detail
    assert gp - observed >= 4, detail
