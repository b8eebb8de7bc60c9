"""The noise model: it recovers a known noise level, and the synthetic trainer's noise is CRN."""

from __future__ import annotations

import math

import numpy as np
import pytest

from optimizer.science.noise import estimate_noise, per_problem_scores
from optimizer.science.synthetic import Landscape, simulate


def test_two_way_model_recovers_a_known_noise_level_within_20_percent() -> None:
    rng = np.random.default_rng(0)
    trials, problems, sigma = 12, 164, 0.3
    mu = rng.normal(0.3, 0.05, size=(trials, 1))  # the configurations differ
    b = rng.normal(0.0, 0.4, size=(1, problems))  # problems differ far more: shared by all
    scores = mu + b + rng.normal(0.0, sigma, size=(trials, problems))
    est = estimate_noise(scores)
    assert est.trial_sd == pytest.approx(sigma / math.sqrt(problems), rel=0.2)
    assert est.between_problem_se == pytest.approx(0.4 / math.sqrt(problems), rel=0.2)
    # The naive per-trial SE over problems counts the shared problem spread: ~1.7x too big.
    naive = float(np.mean(scores.std(axis=1, ddof=1)) / math.sqrt(problems))
    assert naive > 1.5 * est.trial_sd


def _replicates(land: Landscape, s: float, p: float, *, crn_seed: int, count: int,
                first: int = 0) -> list[tuple[float, list[int]]]:
    out = []
    for r in range(first, first + count):
        value, _, counts = simulate(land, s, p, n=10, k=10, n_problems=40, problem_seed=0,
                                    rng=np.random.default_rng(r), crn_seed=crn_seed)
        out.append((value, counts))
    return out


def test_noise_estimate_matches_the_synthetic_trainers_true_trial_noise() -> None:
    land = Landscape(optimum_s=1.0, optimum_p=0.5)
    # Truth: the SD of the difference of two trials that share the eval seed (CRN) but not
    # their training noise, over many pairs, divided by sqrt(2).
    pairs = _replicates(land, 1.0, 0.5, crn_seed=3, count=400)
    diffs = [a[0] - b[0] for a, b in zip(pairs[::2], pairs[1::2], strict=True)]
    truth = float(np.std(diffs, ddof=1)) / math.sqrt(2.0)
    # Estimate: one study's worth of trials (same seed, no replicates needed).
    study = _replicates(land, 1.0, 0.5, crn_seed=3, count=12, first=1000)
    est = estimate_noise(per_problem_scores([c for _, c in study], n=10, k=10))
    assert est.trial_sd == pytest.approx(truth, rel=0.2)


def test_synthetic_noise_is_common_random_numbers() -> None:
    land = Landscape(optimum_s=1.0, optimum_p=0.5)
    # Same config, same seeds, no training noise: identical counts; a nearby config under the
    # same eval seed moves only a few samples, while another eval seed redraws them all.
    a = simulate(land, 1.0, 0.5, n=10, k=10, n_problems=40, problem_seed=0,
                 rng=np.random.default_rng(0), crn_seed=7, train_sd=0.0)
    b = simulate(land, 1.0, 0.5, n=10, k=10, n_problems=40, problem_seed=0,
                 rng=np.random.default_rng(1), crn_seed=7, train_sd=0.0)
    near = simulate(land, 1.05, 0.52, n=10, k=10, n_problems=40, problem_seed=0,
                    rng=np.random.default_rng(2), crn_seed=7, train_sd=0.0)
    other = simulate(land, 1.0, 0.5, n=10, k=10, n_problems=40, problem_seed=0,
                     rng=np.random.default_rng(0), crn_seed=8, train_sd=0.0)
    assert a[2] == b[2]
    moved_near = sum(abs(x - y) for x, y in zip(a[2], near[2], strict=True))
    moved_other = sum(abs(x - y) for x, y in zip(a[2], other[2], strict=True))
    assert moved_near < moved_other / 3
    # Across seeds, two nearby configurations' scores are strongly correlated (CRN).
    xs, ys = [], []
    for seed in range(60):
        xs.append(simulate(land, 1.0, 0.5, n=10, k=10, n_problems=40, problem_seed=0,
                           rng=np.random.default_rng(seed), crn_seed=seed)[0])
        ys.append(simulate(land, 1.1, 0.55, n=10, k=10, n_problems=40, problem_seed=0,
                           rng=np.random.default_rng(seed + 10_000), crn_seed=seed)[0])
    assert float(np.corrcoef(xs, ys)[0, 1]) > 0.5
