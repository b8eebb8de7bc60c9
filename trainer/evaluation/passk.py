"""The unbiased pass@k estimator of Chen et al. (2021) and its summary over problems."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c correct) passes.

    ``1 - C(n-c, k) / C(n, k)``, computed as a stable product.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n} c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n} k={k}")
    if n - c < k:
        return 1.0
    # C(n-c,k)/C(n,k) = prod_{i=n-c+1}^{n} (1 - k/i)
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


@dataclass(frozen=True, kw_only=True)
class PassAtK:
    """pass@k averaged over problems, with its standard error over problems."""

    k: int
    mean: float
    stderr: float
    per_problem: tuple[float, ...]


def summarize(n: Sequence[int], correct: Sequence[int], k: int) -> PassAtK:
    """Mean and standard error (sample SD / sqrt(P)) of per-problem pass@k."""
    if len(n) != len(correct):
        raise ValueError("n and correct must have one entry per problem")
    if not n:
        raise ValueError("no problems to summarise")
    values = tuple(pass_at_k(ni, ci, k) for ni, ci in zip(n, correct, strict=True))
    mean = math.fsum(values) / len(values)
    if len(values) > 1:
        var = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
        stderr = math.sqrt(var / len(values))
    else:
        stderr = 0.0
    return PassAtK(k=k, mean=mean, stderr=stderr, per_problem=values)
