"""Where to run the next trial: the knowledge gradient of the answer's own surrogate.

Proposals and the answer share one model (``optimizer.science.surrogate``) with one
noise model. The answer is the argmax of that model's posterior mean, so the
default acquisition asks directly how much one more trial at ``x`` would raise the
best posterior mean: the knowledge gradient (Frazier, Powell and Dayanik 2009;
Scott, Frazier and Powell 2011 for correlated beliefs), with the trial's noise as
the surrogate sees it (the study's trial-vs-trial SD plus the fitted extra noise).
Under noise it neither re-runs a spot the model already knows (plain expected
improvement on a noisy model did, on the incumbent corner) nor explores where the
answer could not change. Expected improvement (log-scaled for stability, over the
best posterior *mean* at the observed points) stays available as ``"ei"``.

Trials still running are "kriging believers": each is added as an observation at
its posterior mean, which collapses the variance around it, and no proposal
repeats a running trial's point, so parallel workers are not sent to the same spot.
``fixed`` pins coordinates (e.g. one distribution's heterogeneity) in every
candidate; the knowledge gradient then asks about the best point of that slice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from optimizer.science import space as space_mod
from optimizer.science.space import ParamSpec
from optimizer.science.surrogate import Observation, Surrogate

ACQUISITIONS: tuple[str, ...] = ("kg", "ei")
_QUADRATURE_NODES = 24  # Gauss-Hermite nodes for the knowledge gradient's expectation
_CHUNK = 256  # candidates per block, to bound the (nodes x reference x chunk) array
_MAX_REFERENCE = 512  # reference points (where the best mean is sought) at most


def log_expected_improvement(mean: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
    """log E[max(f - best, 0)] for f ~ N(mean, sd^2), elementwise, finite even where the
    improvement is astronomically unlikely (plain EI underflows to 0 there and ties)."""
    from scipy.special import log_ndtr, ndtr

    sd = np.maximum(sd, 1e-12)
    z = np.asarray((mean - best) / sd, dtype=float)
    log_phi = -0.5 * z * z - 0.5 * math.log(2.0 * math.pi)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        # z > -1: z Phi(z) + phi(z) directly (no cancellation, no overflow). Below that,
        # log phi(z) + log(1 + z Phi(z)/phi(z)); under z = -40 the sum cancels and the
        # asymptotic series of the Mills ratio takes over.
        direct = np.log(z * ndtr(z) + np.exp(log_phi))
        mills = np.exp(log_ndtr(z) - log_phi)  # Phi(z) / phi(z), <= 1/|z| for z < 0
        inner = np.where(z > -40.0, 1.0 + z * mills, _tail_term(z))
        low = log_phi + np.log(np.maximum(inner, 1e-300))
    return np.asarray(np.where(z > -1.0, direct, low) + np.log(sd))


def _tail_term(z: np.ndarray) -> np.ndarray:
    """1 + z Phi(z)/phi(z) for very negative z: 1/z^2 - 3/z^4 + 15/z^6 - 105/z^8 + ...
    (asymptotic; below z = -40 the first four terms are exact to 1e-10 relative)."""
    u = 1.0 / np.minimum(z, -40.0) ** 2
    return np.asarray(u * (1.0 - u * (3.0 - u * (15.0 - 105.0 * u))))


def knowledge_gradient(surrogate: Surrogate, Xc: np.ndarray, Xref: np.ndarray,
                       noise_var: float) -> np.ndarray:
    """E[max posterior mean after one more trial at x] - max posterior mean now, per row of
    ``Xc`` (encoded). The max runs over ``Xref`` and x itself; one trial's value has noise
    variance ``noise_var``. The expectation is Gauss-Hermite quadrature over the trial's
    standardised outcome, exact enough for ranking candidates."""
    z, w = np.polynomial.hermite_e.hermegauss(_QUADRATURE_NODES)
    w = w / w.sum()
    mu_ref, _ = surrogate.predict_encoded(Xref)
    mu_c, sd_c = surrogate.predict_encoded(Xc)
    now = np.maximum(float(mu_ref.max()), mu_c)
    out = np.empty(len(Xc))
    for lo in range(0, len(Xc), _CHUNK):
        block = slice(lo, lo + _CHUNK)
        denom = np.sqrt(sd_c[block] ** 2 + noise_var)
        # How the posterior mean at each reference point moves per unit of the outcome.
        move = surrogate.posterior_cov(Xref, Xc[block]) / denom[None, :]
        after = mu_ref[None, :, None] + move[None, :, :] * z[:, None, None]
        best = after.max(axis=1)  # (nodes, block)
        own = mu_c[block][None, :] + (sd_c[block] ** 2 / denom)[None, :] * z[:, None]
        out[block] = w @ np.maximum(best, own) - now[block]
    return out


def propose(space: Sequence[ParamSpec], observations: Sequence[Observation], *,
            pending: Sequence[Mapping[str, Any]] = (), seed: int = 0, per_axis: int = 41,
            xi: float = 0.0, fixed: Mapping[str, Any] | None = None,
            acquisition: str = "kg", pessimistic: bool = False) -> dict[str, Any]:
    """The candidate with the highest acquisition value, as a full parameter dict.

    ``pending``: running trials (never proposed again). ``fixed``: coordinates held at
    the given values in every candidate; the others are searched (a grid of
    ``per_axis`` points per axis, or scrambled Sobol in higher dimension). ``acquisition``:
    ``"kg"`` (knowledge gradient) or ``"ei"`` (expected improvement over the best
    posterior mean at the observed points, moved onto the ``fixed`` slice); for ``"ei"``,
    ``xi`` (in units of the trial noise) raises the bar an improvement must clear.
    ``pessimistic``: the GP's prior mean is the worst observed value, not the average,
    so the surface reverts to "poor" away from the data (see ``_prior_mean``)."""
    if acquisition not in ACQUISITIONS:
        raise ValueError(f"acquisition must be one of {ACQUISITIONS}, not {acquisition!r}")
    obs = [o for o in observations if math.isfinite(o.value)]
    if not obs:
        raise ValueError("propose needs at least one finite observation")
    noise = float(np.median([o.stderr for o in obs]))
    prior_mean = _prior_mean(obs) if pessimistic else None
    if pending:
        believed = Surrogate(space, obs, seed=seed, prior_mean=prior_mean)
        means, _ = believed.predict(list(pending))
        obs = obs + [Observation(number=-1 - i, params=dict(p), value=float(m), stderr=noise)
                     for i, (p, m) in enumerate(zip(pending, means, strict=True))]
    surrogate = Surrogate(space, obs, seed=seed, prior_mean=prior_mean)
    cands = free_candidates(space, fixed, per_axis=per_axis, seed=seed)
    Xc = space_mod.encode_many(space, cands)
    if acquisition == "kg":
        ref = free_candidates(space, fixed, per_axis=per_axis // 2 + 1, seed=seed + 1,
                              max_points=_MAX_REFERENCE)
        Xref = space_mod.encode_many(space, ref)
        score = knowledge_gradient(surrogate, Xc, Xref,
                                   noise * noise + surrogate.extra_noise_var)
    else:
        mean, sd = surrogate.predict_encoded(Xc)
        # The incumbent is taken in the slice searched: observed points moved onto it.
        seen, _ = surrogate.predict([{**o.params, **(fixed or {})} for o in obs])
        score = log_expected_improvement(mean, sd, float(np.max(seen)) + xi * noise)
    score[_duplicates(space, Xc, pending)] = -np.inf
    best = int(np.argmax(score))
    return dict(cands[best])


def _prior_mean(obs: Sequence[Observation]) -> float:
    """The worst observed value: a pessimistic constant prior mean for proposals.

    With the average as prior mean, a corner far from every trial reverts to an average
    value with a large SD, so the knowledge gradient keeps sending trials to the box's
    edges (boundary over-exploration); with a handful of trials per slice that spends
    them where the study's own hypothesis (an optimum inside the box) says the answer
    is not. Reverting to the worst value keeps exploration where the data point (De Ath,
    Fieldsend and Everson 2020, "What do you mean? The role of the mean function in
    Bayesian optimisation": the worst-observed constant mean was the most robust choice).
    """
    return float(min(o.value for o in obs))


def free_candidates(space: Sequence[ParamSpec], fixed: Mapping[str, Any] | None, *,
                    per_axis: int, seed: int, max_points: int = 4096) -> list[dict[str, Any]]:
    """``space_mod.candidates`` over the coordinates not in ``fixed``, each row completed
    with the fixed values (in the space's order). Unknown names and values outside a
    coordinate's range or choices raise ``ValueError``."""
    fixed = dict(fixed or {})
    names = {p.name for p in space}
    unknown = sorted(set(fixed) - names)
    if unknown:
        raise ValueError(f"fixed names {unknown} are not in the space {sorted(names)}")
    for p in space:
        if p.name in fixed:
            _check_fixed(p, fixed[p.name])
    free = [p for p in space if p.name not in fixed]
    rows = space_mod.candidates(free, per_axis=per_axis, max_points=max_points, seed=seed)
    return [{p.name: (fixed[p.name] if p.name in fixed else row[p.name]) for p in space}
            for row in rows]


def _check_fixed(p: ParamSpec, value: Any) -> None:
    if p.choices is not None:
        if value not in p.choices:
            raise ValueError(f"fixed {p.name}={value!r} is not one of {list(p.choices)}")
        return
    assert p.low is not None and p.high is not None
    if not isinstance(value, (int, float)) or not p.low <= float(value) <= p.high:
        raise ValueError(f"fixed {p.name}={value!r} is outside [{p.low}, {p.high}]")


def _duplicates(space: Sequence[ParamSpec], Xc: np.ndarray,
                pending: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Mask of candidates that coincide with a running trial (unless every one does:
    then a replicate is the only proposal there is)."""
    if not pending:
        return np.zeros(len(Xc), dtype=bool)
    Xp = space_mod.encode_many(space, list(pending))
    gap = np.abs(Xc[:, None, :] - Xp[None, :, :]).max(axis=2).min(axis=1)
    same = gap < 1e-9
    return same if not same.all() else np.zeros(len(Xc), dtype=bool)
