"""Is the predicted optimum really better than FedAvg? Paired replicates say.

Verification re-runs the predicted optimum and the FedAvg baseline (s = 1 at the
same participation) under ``r`` fresh (training seed, evaluation seed) pairs. Both
arms of a replicate share their seeds, so the lift is judged by the paired
differences: mean difference +/- t(0.975, r-1) * sd / sqrt(r). Calibration
(replicates of one configuration) gives the replicate noise that decides whether
a profile can separate effects of a given size at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, kw_only=True)
class Lift:
    """The optimum's pass@k lift over the baseline from paired replicates."""

    optimum: Mapping[str, Any] = field(metadata={"help": "the verified parameters"})
    baseline: Mapping[str, Any] = field(metadata={"help": "FedAvg: s = 1 at the same p"})
    optimum_values: tuple[float, ...] = field(metadata={"help": "pass@k per replicate"})
    baseline_values: tuple[float, ...] = field(metadata={"help": "pass@k per replicate"})
    mean: float = field(metadata={"help": "mean paired difference optimum - baseline"})
    lower: float = field(metadata={"help": "95% paired CI, lower end"})
    upper: float = field(metadata={"help": "95% paired CI, upper end"})

    @property
    def replicates(self) -> int:
        return len(self.optimum_values)

    def describe(self) -> str:
        if dict(self.optimum) == dict(self.baseline):
            return f"none: the optimum is FedAvg (s = 1) itself (r={self.replicates})"
        return f"{self.mean:+.3f} [{self.lower:+.3f}, {self.upper:+.3f}] (r={self.replicates})"


def paired_lift(optimum: Mapping[str, Any], baseline: Mapping[str, Any],
                optimum_values: Sequence[float], baseline_values: Sequence[float]) -> Lift:
    """The paired 95% t-interval of ``optimum_values - baseline_values``."""
    from scipy.stats import t as student_t

    a = np.asarray(optimum_values, dtype=float)
    b = np.asarray(baseline_values, dtype=float)
    if a.shape != b.shape or a.size < 2:
        raise ValueError("need the same number (>= 2) of replicates in both arms")
    diff = a - b
    half = float(student_t.ppf(0.975, diff.size - 1)) * float(diff.std(ddof=1)) \
        / math.sqrt(diff.size)
    mean = float(diff.mean())
    return Lift(optimum=dict(optimum), baseline=dict(baseline),
                optimum_values=tuple(map(float, a)), baseline_values=tuple(map(float, b)),
                mean=mean, lower=mean - half, upper=mean + half)


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """What a profile can resolve: replicate noise against the effects across the space."""

    noise_sd: float = field(metadata={"help": "SD of replicates of one configuration"})
    effect_range: float = field(metadata={"help": "max - min of the spread points' scores"})
    epsilon: float = field(metadata={"help": "the stop rule's epsilon"})
    replicate_values: tuple[float, ...] = ()
    spread: tuple[tuple[Mapping[str, Any], float], ...] = ()

    @property
    def snr(self) -> float:
        return self.effect_range / self.noise_sd if self.noise_sd > 0 else math.inf

    @property
    def noise_sd_upper(self) -> float:
        """One-sided 90% upper bound on the noise SD (chi-square on r - 1 degrees of
        freedom): three replicates pin an SD only to within a factor of ~2.5."""
        from scipy.stats import chi2

        dof = len(self.replicate_values) - 1
        if dof < 1:
            return math.inf
        return self.noise_sd * math.sqrt(dof / float(chi2.ppf(0.10, dof)))

    @property
    def snr_lower(self) -> float:
        """The SNR with the noise at its 90% upper bound: what the replicates guarantee."""
        upper = self.noise_sd_upper
        return self.effect_range / upper if upper > 0 else math.inf

    @property
    def trials_for_epsilon(self) -> int:
        """Trials near the optimum for the posterior SD there to reach epsilon, ~(sd/eps)^2."""
        return max(1, math.ceil((self.noise_sd / self.epsilon) ** 2))

    def verdict(self) -> str:
        if self.snr < 3.0:
            return (f"SNR {self.snr:.1f} < 3: this profile cannot separate effects across the "
                    f"space from its noise; a study on it measures noise")
        if self.snr_lower < 3.0:
            return (f"SNR {self.snr:.1f}, but only >= {self.snr_lower:.1f} at 90% confidence "
                    f"from {len(self.replicate_values)} replicates: more replicates would "
                    f"show whether it clears 3")
        if self.noise_sd > self.epsilon:
            return (f"SNR {self.snr:.1f}; the stop rule needs about {self.trials_for_epsilon} "
                    f"trials near the optimum to resolve epsilon={self.epsilon:g}")
        return f"SNR {self.snr:.1f}; noise below epsilon: a few trials resolve the optimum"


def calibration(replicates: Sequence[float], spread: Sequence[tuple[Mapping[str, Any], float]],
                *, epsilon: float) -> Calibration:
    """Replicate noise, and the effect range over the spread points. The spread points
    share the study's seeds (common random numbers), so their range holds the effects
    plus only the noise that does not cancel between trials."""
    values = np.asarray(replicates, dtype=float)
    if values.size < 2 or len(spread) < 2:
        raise ValueError("need at least 2 replicates and 2 spread points")
    scores = [v for _, v in spread]
    return Calibration(noise_sd=float(values.std(ddof=1)),
                       effect_range=float(max(scores) - min(scores)), epsilon=epsilon,
                       replicate_values=tuple(map(float, values)),
                       spread=tuple((dict(p), float(v)) for p, v in spread))
