"""The answer of a study: observed best, the surrogate's predicted optimum, and the stop rule.

Science only: plain arrays and dataclasses in, dataclasses out. The predicted
optimum is the argmax of the surrogate's (``optimizer.science.surrogate``)
posterior mean of the latent pass@k over a dense candidate set; its 95% credible
interval is mean +/- 1.96 latent posterior SD (observation noise excluded). The
stop rule lives in ``optimizer.science.stoprule``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optimizer.science import space as space_mod
from optimizer.science.regions import Region, posterior_regions
from optimizer.science.space import ParamSpec
from optimizer.science.stoprule import StopDecision, stop_decision
from optimizer.science.surrogate import Observation, Surrogate

__all__ = ["Answer", "Observation", "Prediction", "Region", "StopDecision", "Surrogate",
           "compute_answer"]

Z95 = 1.959963984540054


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """The surrogate's predicted optimum."""

    params: Mapping[str, Any]
    mean: float
    sd: float
    lower: float = field(metadata={"help": "mean - 1.96 sd"})
    upper: float = field(metadata={"help": "mean + 1.96 sd"})
    level_lower: float | None = field(default=None, metadata={
        "help": "95% CI of the pass@k level at the optimum, with the between-problem SE"})
    level_upper: float | None = field(default=None, metadata={"help": "see level_lower"})


@dataclass(frozen=True, kw_only=True)
class Answer:
    """Per-distribution answer: what was seen, what the GP believes, and how sure it is."""

    n_complete: int
    observed_best: Observation | None
    predicted: Prediction | None
    stop: StopDecision | None = None
    argmax_region: Region | None = None  # holds 90% of the posterior of (s*, p*)
    epsilon_region: Region | None = None  # P(within epsilon of the best) >= 0.9
    noise_sd: float | None = None  # a trial's noise relative to the others (the GP's)


def observed_best(observations: Sequence[Observation]) -> Observation | None:
    return max(observations, key=lambda o: o.value) if observations else None


def predicted_optimum(surrogate: Surrogate, cands: Sequence[Mapping[str, Any]], *,
                      level_se: float = 0.0) -> Prediction:
    """The argmax of the posterior mean. ``level_se`` (the between-problem SE that all
    trials share) widens only the CI of the pass@k level, not the comparison."""
    mean, sd = surrogate.predict(cands)
    i = int(np.argmax(mean))
    m, s = float(mean[i]), float(sd[i])
    half = Z95 * math.sqrt(s * s + level_se * level_se)
    # pass@k is a probability: a normal interval past 0 or 1 claims values that cannot be.
    return Prediction(params=dict(cands[i]), mean=m, sd=s, lower=m - Z95 * s, upper=m + Z95 * s,
                      level_lower=max(0.0, m - half), level_upper=min(1.0, m + half))


def _without(region: Region, fixed: Mapping[str, Any]) -> Region:
    """``region`` without the axes held fixed (their one value says nothing)."""
    bounds = {k: v for k, v in region.bounds.items() if k not in fixed}
    return Region(mass=region.mass, bounds=bounds, n_points=region.n_points)


def compute_answer(space: Sequence[ParamSpec], observations: Sequence[Observation], *,
                   seed: int = 0, stop: Mapping[str, Any] | None = None,
                   per_axis: int = 41, epsilon: float = 0.02, level_se: float = 0.0,
                   regions: bool = True, fixed: Mapping[str, Any] | None = None) -> Answer:
    """The full answer; the GP needs at least 3 complete trials (else only the observed best).

    ``stop`` holds the keyword arguments of ``stop_decision`` (min_trials, epsilon,
    probability) to evaluate the stop rule too. ``regions`` adds the 90% argmax and
    epsilon-optimal regions (``optimizer.science.regions``); ``level_se`` is the
    between-problem SE added to the level CI only. ``fixed`` holds coordinates of the
    space at given values (the heterogeneity of one distribution, when one surrogate
    spans several): the answer is the optimum over the other coordinates there, and
    the regions leave the fixed ones out.
    """
    from threadpoolctl import threadpool_limits

    obs = [o for o in observations if math.isfinite(o.value)]
    if len(obs) < 3:
        return Answer(n_complete=len(obs), observed_best=observed_best(obs), predicted=None)
    # Small dense algebra: BLAS threads only add contention (and the trainer wants the cores).
    with threadpool_limits(1):
        return _answer(space, obs, seed=seed, stop=stop, per_axis=per_axis, epsilon=epsilon,
                       level_se=level_se, regions=regions, fixed=dict(fixed or {}))


def _answer(space: Sequence[ParamSpec], obs: Sequence[Observation], *, seed: int,
            stop: Mapping[str, Any] | None, per_axis: int, epsilon: float, level_se: float,
            regions: bool, fixed: dict[str, Any]) -> Answer:
    surrogate = Surrogate(space, obs, seed=seed)
    free = [p for p in space if p.name not in fixed]
    cands = [{**c, **fixed} for c in space_mod.candidates(free, per_axis=per_axis, seed=seed)]
    decision = None
    if stop is not None:
        decision = stop_decision(surrogate, cands, n_complete=len(obs), seed=seed, **stop)
    argmax_region = epsilon_region = None
    if regions:
        argmax_region, epsilon_region = (
            _without(r, fixed) for r in posterior_regions(surrogate, cands, epsilon=epsilon,
                                                           seed=seed))
    return Answer(n_complete=len(obs), observed_best=observed_best(obs),
                  predicted=predicted_optimum(surrogate, cands, level_se=level_se),
                  stop=decision, argmax_region=argmax_region, epsilon_region=epsilon_region,
                  noise_sd=float(np.median([o.stderr for o in obs])))
