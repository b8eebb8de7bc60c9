"""The noise that matters when trials are compared, estimated from per-problem results.

All trials of a study share the problems, the training seed and the evaluation
seed (common random numbers). A trial's per-problem pass@k is modelled as

    y[t, i] = mu[t] + b[i] + e[t, i]

with ``mu[t]`` the trial (configuration) effect, ``b[i]`` the problem effect that
every trial shares, and ``e[t, i]`` what is left: sampling noise and training
noise that the shared seeds do not cancel. The score of a trial is
``mean_i y[t, i] = mu[t] + mean(b) + mean_i e[t, i]``. In a comparison between
two trials ``mean(b)`` cancels, so the noise of a trial *relative to the others*
is ``sd(e) / sqrt(P)``, not its standard error over problems (which is mostly
the between-problem spread of ``b``). That shared part is added back once, and
only to the credible interval of the pass@k *level* (``between_problem_se``).

``sd(e)`` comes from the residuals of the two-way additive fit (the classical
randomised-block estimate, ``SS_res / ((T-1)(P-1))``). Any configuration x
problem interaction also lands in the residual, so the estimate errs on the
noisy (conservative) side. With a single trial there is nothing to compare and
the per-trial standard error is used instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from trainer.evaluation.passk import pass_at_k


@dataclass(frozen=True, kw_only=True)
class NoiseEstimate:
    """Noise of one trial's pass@k relative to other trials of the same study."""

    trial_sd: float = field(metadata={"help": "SD of a trial's score relative to the others"})
    between_problem_se: float = field(
        metadata={"help": "SE of the level that all trials share (problem sampling)"})
    n_trials: int = field(metadata={"help": "trials the estimate used"})
    n_problems: int = field(metadata={"help": "problems per trial"})
    method: str = field(metadata={"help": "two-way residual, or per-trial SE as a fallback"})

    @property
    def difference_sd(self) -> float:
        """SD of the difference between two trials' scores."""
        return math.sqrt(2.0) * self.trial_sd


def per_problem_scores(counts: Sequence[Sequence[int]], *, n: int, k: int) -> np.ndarray:
    """pass@k per problem, shape (trials, problems), from passing-sample counts."""
    return np.array([[pass_at_k(n, int(c), k) for c in row] for row in counts], dtype=float)


def estimate_noise(scores: np.ndarray) -> NoiseEstimate:
    """The additive problem + trial model on per-problem scores ``(trials, problems)``."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError("need a (trials, problems) array with at least 2 problems")
    t, p = scores.shape
    problem_means = scores.mean(axis=0)
    if t < 2:
        se = float(scores[0].std(ddof=1) / math.sqrt(p))
        return NoiseEstimate(trial_sd=se, between_problem_se=se, n_trials=1, n_problems=p,
                             method="per-trial standard error (one trial)")
    resid = scores - scores.mean(axis=1, keepdims=True) - problem_means + scores.mean()
    sigma2 = float(np.sum(resid * resid) / ((t - 1) * (p - 1)))
    # Method of moments: the spread of problem means, less what the noise adds to it.
    between_var = max(float(problem_means.var(ddof=1)) - sigma2 / t, 0.0)
    return NoiseEstimate(trial_sd=math.sqrt(sigma2 / p),
                         between_problem_se=math.sqrt(between_var / p),
                         n_trials=t, n_problems=p, method="two-way residual")


def replicate_sd(values: Sequence[float]) -> float:
    """SD of replicate scores (the same configuration under fresh seed pairs)."""
    arr = np.asarray(values, dtype=float)
    if arr.size < 2:
        raise ValueError("need at least 2 replicates")
    return float(arr.std(ddof=1))
