"""The stop rule: end a study once more trials would barely move its answer.

Draw joint posterior samples of the latent surface on the candidate set; the
regret of the predicted optimum in a draw is max(draw) - draw(x_hat). The study
stops once P(regret <= epsilon) >= probability, the posterior SD at the
predicted optimum is <= epsilon, and at least ``min_trials`` trials are
complete. (The SD condition guards against a GP that has explained a few noisy
trials as "flat plus noise" and so draws near-identical surfaces.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optimizer.science import space as space_mod
from optimizer.science.surrogate import Surrogate


@dataclass(frozen=True, kw_only=True)
class StopDecision:
    stop: bool
    probability: float  # P(regret of the predicted optimum <= epsilon)
    reason: str


def stop_decision(surrogate: Surrogate, cands: Sequence[Mapping[str, Any]], *, n_complete: int,
                  min_trials: int, epsilon: float, probability: float, n_draws: int = 256,
                  max_points: int = 200, seed: int = 0) -> StopDecision:
    """Posterior probability that the predicted optimum is within ``epsilon`` of the best."""
    rng = np.random.default_rng(seed)
    Xc = space_mod.encode_many(surrogate.space, cands)
    mean, sd = surrogate.predict_encoded(Xc)
    # The joint draw is cubic in the candidate count, and the max of a draw almost surely
    # lies where the upper confidence bound is high: keep the predicted optimum (first)
    # and the candidates with the highest mean + 2 sd.
    best = int(np.argmax(mean))
    ucb = mean + 2.0 * sd
    ucb[best] = np.inf
    keep = np.argsort(-ucb)[:max_points]
    draws = surrogate.sample_latent(Xc[keep], n_draws, rng)
    regret = draws.max(axis=1) - draws[:, 0]
    prob = float(np.mean(regret <= epsilon))
    if n_complete < min_trials:
        return StopDecision(stop=False, probability=prob,
                            reason=f"{n_complete} < min_trials={min_trials}")
    sd_best = float(sd[best])
    if sd_best > epsilon:
        return StopDecision(stop=False, probability=prob,
                            reason=f"SD at the predicted optimum {sd_best:.3f} > {epsilon:g}")
    if prob >= probability:
        return StopDecision(stop=True, probability=prob,
                            reason=f"P(regret <= {epsilon:g}) = {prob:.2f} >= {probability:g}")
    return StopDecision(stop=False, probability=prob,
                        reason=f"P(regret <= {epsilon:g}) = {prob:.2f} < {probability:g}")
