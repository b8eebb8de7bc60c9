from __future__ import annotations

import itertools
import math
import random

import pytest

from trainer.evaluation.passk import pass_at_k, summarize


def brute_force(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (c correct) that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 11))
def test_matches_enumeration(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12)


def test_matches_closed_form_for_large_n() -> None:
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(10, 200)
        c = rng.randint(0, n)
        k = rng.randint(1, n)
        expected = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-9)


def test_pass_at_1_is_fraction_correct() -> None:
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 2, 6)
    with pytest.raises(ValueError):
        pass_at_k(5, 2, 0)


def test_summary_mean_and_stderr() -> None:
    s = summarize([10, 10, 10, 10], [0, 10, 5, 1], k=1)
    values = [0.0, 1.0, 0.5, 0.1]
    mean = sum(values) / 4
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
    assert s.mean == pytest.approx(mean)
    assert s.stderr == pytest.approx(sd / 2)
    assert s.per_problem == pytest.approx(tuple(values))


def test_summary_single_problem_has_zero_stderr() -> None:
    assert summarize([10], [3], k=10).stderr == 0.0
