"""A synthetic trainer: pass@k with a known optimum and realistic binomial noise.

Science only (pure functions, no Optuna, no threads). Each problem ``i`` has a
fixed difficulty logit ``b_i`` (drawn once from the problem-set seed, so every
trial sees the same problems: common random numbers). A configuration's
quality ``g(s, p) in (0, 1]`` is a Gaussian bump in (log s, p) centred on the
true optimum; a sample solves problem ``i`` with probability
``sigmoid(b_i + lift * g + d_i)``, where ``d_i ~ N(0, train_sd^2)`` is the trial's
training noise. Sampling uses common random numbers keyed by the evaluation seed
(see ``simulate``), so trials of one study are correlated as real seeded trials
are. A trial reports the unbiased pass@k averaged over problems with its standard
error, computed by the evaluator's own ``trainer.evaluation.passk``. The expected
pass@k is monotone in ``g``, so its argmax is exactly the optimum.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainer.evaluation.passk import summarize


def optimum_at(h: float) -> tuple[float, float]:
    """(scaling factor, participation) optimum as a smooth function of a measured
    heterogeneity ``h`` in [0, 1] (the mean TV distance of a real partition): s* falls
    log-linearly from 3 (extrapolate when clients agree) and p* rises from 0.25."""
    h = min(max(h, 0.0), 1.0)
    return 3.0 * math.exp(-2.5 * h), 0.25 + 0.6 * h


@dataclass(frozen=True, kw_only=True)
class Landscape:
    """The true response surface of one distribution."""

    optimum_s: float = field(metadata={"help": "true optimal scaling factor"})
    optimum_p: float = field(metadata={"help": "true optimal participation rate"})
    width_log_s: float = field(default=0.7, metadata={"help": "bump width in ln(s)"})
    width_p: float = field(default=0.35, metadata={"help": "bump width in participation"})
    lift: float = field(default=1.9, metadata={"help": "logit gain at the optimum"})
    base_mean: float = field(default=-5.0, metadata={"help": "mean problem difficulty logit"})
    base_sd: float = field(default=1.6, metadata={"help": "spread of problem difficulty"})

    def quality(self, s: float, p: float) -> float:
        z_s = (math.log(s) - math.log(self.optimum_s)) / self.width_log_s
        z_p = (p - self.optimum_p) / self.width_p
        return math.exp(-0.5 * (z_s * z_s + z_p * z_p))

    def difficulties(self, n_problems: int, problem_seed: int) -> np.ndarray:
        rng = np.random.default_rng([problem_seed, n_problems, 7919])
        return rng.normal(self.base_mean, self.base_sd, size=n_problems)

    def solve_probabilities(self, s: float, p: float, b: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(b + self.lift * self.quality(s, p))))

    def expected_pass_at_k(self, s: float, p: float, *, k: int, n_problems: int,
                           problem_seed: int, train_sd: float = 0.5) -> float:
        """E[pass@k] = mean_i E_d[1 - (1 - q_i)^k] (the estimator is unbiased), the training
        noise ``d`` integrated out by Gauss-Hermite quadrature."""
        nodes, weights = np.polynomial.hermite_e.hermegauss(24)
        b = self.difficulties(n_problems, problem_seed)
        total = 0.0
        for z, w in zip(nodes, weights / weights.sum(), strict=True):
            q = self.solve_probabilities(s, p, b + train_sd * z)
            total += w * float(np.mean(1.0 - (1.0 - q) ** k))
        return total


def noise_seed(eval_seed: int, params: Mapping[str, Any]) -> int:
    """A per-configuration seed: the same params and eval_seed give the same draw, as a
    seeded real trial would; different params give independent samples."""
    blob = json.dumps({"eval_seed": eval_seed, **params}, sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "little")


def simulate(landscape: Landscape, s: float, p: float, *, n: int, k: int, n_problems: int,
             problem_seed: int, rng: np.random.Generator, crn_seed: int | None = None,
             train_sd: float = 0.5) -> tuple[float, float, list[int]]:
    """One noisy trial: (pass@k, standard error, per-problem correct counts).

    Common random numbers, as a seeded real trial has them: with ``crn_seed`` (the
    evaluation seed) sample ``j`` of problem ``i`` passes when a uniform ``U[i, j]``
    drawn from ``crn_seed`` alone falls below the solve probability, so trials that
    share the seed share their sampling luck and nearby configurations get nearly the
    same counts. ``rng`` (the configuration and its training seed) adds what shared
    seeds do not cancel: a per-problem logit shift of SD ``train_sd`` (training noise).
    Without ``crn_seed`` the samples are independent per trial.
    """
    b = landscape.difficulties(n_problems, problem_seed)
    shift = rng.normal(0.0, train_sd, size=n_problems) if train_sd > 0 else 0.0
    q = landscape.solve_probabilities(s, p, b + shift)
    if crn_seed is None:
        correct = rng.binomial(n, q)
    else:
        uniforms = np.random.default_rng([crn_seed, problem_seed, n_problems, n, 104729]) \
            .random((n_problems, n))
        correct = (uniforms < q[:, None]).sum(axis=1)
    counts = [int(c) for c in correct]
    summary = summarize([n] * len(counts), counts, k)
    return summary.mean, summary.stderr, counts
