"""Where to run the next trial: expected improvement on the answer's own surrogate.

Proposals and the answer share one model (``optimizer.science.surrogate``) with one
noise model, so the study spends trials where the answer is uncertain. Expected
improvement is taken over the best posterior *mean* at the observed points (not
the best noisy observation, which a lucky draw inflates), the usual choice under
noise. Trials still running are "kriging believers": each is added as an
observation at its posterior mean, which collapses the variance around it, so
parallel workers are not sent to the same spot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from optimizer.science import space as space_mod
from optimizer.science.space import ParamSpec
from optimizer.science.surrogate import Observation, Surrogate


def expected_improvement(mean: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
    """E[max(f - best, 0)] for f ~ N(mean, sd^2), elementwise."""
    from scipy.stats import norm

    sd = np.maximum(sd, 1e-12)
    z = (mean - best) / sd
    return np.asarray((mean - best) * norm.cdf(z) + sd * norm.pdf(z))


def propose(space: Sequence[ParamSpec], observations: Sequence[Observation], *,
            pending: Sequence[Mapping[str, Any]] = (), seed: int = 0,
            per_axis: int = 41, xi: float = 0.0,
            fixed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The candidate with the highest expected improvement (``pending``: running trials).

    ``xi`` (in units of the trial noise) raises the bar an improvement must clear, which
    pushes proposals away from spots the GP already knows well. ``fixed`` holds
    coordinates at given values in every candidate (and in the incumbent)."""
    obs = [o for o in observations if math.isfinite(o.value)]
    if pending:
        believed = Surrogate(space, obs, seed=seed)
        means, _ = believed.predict(list(pending))
        noise = float(np.median([o.stderr for o in obs]))
        obs = obs + [Observation(number=-1 - i, params=dict(p), value=float(m), stderr=noise)
                     for i, (p, m) in enumerate(zip(pending, means, strict=True))]
    surrogate = Surrogate(space, obs, seed=seed)
    held = dict(fixed or {})
    cands = [{**c, **held} for c in space_mod.candidates(
        [p for p in space if p.name not in held], per_axis=per_axis, seed=seed)]
    mean, sd = surrogate.predict(cands)
    seen, _ = surrogate.predict([{**o.params, **held} for o in obs])
    noise = float(np.median([o.stderr for o in obs]))
    ei = expected_improvement(mean, sd, float(np.max(seen)) + xi * noise)
    return dict(cands[int(np.argmax(ei))])
