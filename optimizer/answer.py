"""The answer of a study: observed best, the surrogate's predicted optimum, and the stop rule.

Science only: plain arrays and dataclasses in, dataclasses out. The surrogate is
a scikit-learn GP (constant x Matern-5/2 with one lengthscale per unit
coordinate, plus a WhiteKernel) on the [0, 1]^d encoding of ``optimizer.space``,
with each trial's own reported standard error added to its diagonal (so noisy
trials count less). Bounds act as priors: the signal SD is at least the typical
trial noise (a study is only worth running for an effect that large) and the
lengthscales lie in [0.05, 1] of each unit axis. The predicted optimum is the argmax of the posterior mean of
the latent pass@k over a dense candidate set; its 95% credible interval is mean
+/- 1.96 latent posterior SD (observation noise excluded).

Stop rule: draw joint posterior samples of the latent surface on the candidate
set; the regret of the predicted optimum in a draw is max(draw) - draw(x_hat).
The study stops once P(regret <= epsilon) >= probability, the posterior SD at
the predicted optimum is <= epsilon, and at least ``min_trials`` trials are
complete: more trials would then move the answer by less than epsilon with high
posterior probability. (The SD condition guards against a GP that has explained
a few noisy trials as "flat plus noise" and so draws near-identical surfaces.)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optimizer import space as space_mod
from optimizer.studyfile import ParamSpec

Z95 = 1.959963984540054


@dataclass(frozen=True, kw_only=True)
class Observation:
    """One complete trial as the answer sees it."""

    number: int
    params: Mapping[str, Any]
    value: float
    stderr: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """The surrogate's predicted optimum."""

    params: Mapping[str, Any]
    mean: float
    sd: float
    lower: float = field(metadata={"help": "mean - 1.96 sd"})
    upper: float = field(metadata={"help": "mean + 1.96 sd"})


@dataclass(frozen=True, kw_only=True)
class StopDecision:
    stop: bool
    probability: float  # P(regret of the predicted optimum <= epsilon)
    reason: str


@dataclass(frozen=True, kw_only=True)
class Answer:
    """Per-distribution answer: what was seen, what the GP believes, and how sure it is."""

    n_complete: int
    observed_best: Observation | None
    predicted: Prediction | None
    stop: StopDecision | None = None


class Surrogate:
    """A fitted GP over the encoded space; ``predict`` returns the latent mean and SD."""

    def __init__(self, space: Sequence[ParamSpec], observations: Sequence[Observation], *,
                 seed: int = 0) -> None:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        self.space = tuple(space)
        X = space_mod.encode_many(self.space, [o.params for o in observations])
        y = np.array([o.value for o in observations], dtype=float)
        se_raw = np.array([o.stderr for o in observations], dtype=float)
        self._mu = float(y.mean())
        # Scale by the larger of the spread and the typical trial noise, and keep the signal
        # variance >= that: with few noisy trials the marginal likelihood otherwise
        # collapses to "flat + noise" and reports a falsely tiny posterior SD.
        self._scale = max(float(y.std()), float(np.median(se_raw)), 1e-3)
        ys = (y - self._mu) / self._scale
        se = se_raw / self._scale
        kernel = (ConstantKernel(1.0, (1.0, 1e2))
                  * Matern(length_scale=np.full(X.shape[1], 0.3), length_scale_bounds=(0.05, 1.0),
                           nu=2.5)
                  + WhiteKernel(0.05, (1e-6, 1.0)))
        self._gp = GaussianProcessRegressor(kernel=kernel, alpha=se ** 2 + 1e-8,
                                            n_restarts_optimizer=2, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter at bounds is expected here
            self._gp.fit(X, ys)
        self._X = X
        self._latent = self._gp.kernel_.k1  # the kernel without the white noise term

    def predict_encoded(self, Xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy.linalg import solve_triangular

        K_s = self._latent(Xc, self._X)
        mean = K_s @ self._gp.alpha_
        v = solve_triangular(self._gp.L_, K_s.T, lower=True)
        var = np.maximum(self._latent.diag(Xc) - np.sum(v * v, axis=0), 1e-12)
        return mean * self._scale + self._mu, np.sqrt(var) * self._scale

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        return self.predict_encoded(space_mod.encode_many(self.space, rows))

    def sample_latent(self, Xc: np.ndarray, n_draws: int, rng: np.random.Generator) -> np.ndarray:
        """Joint posterior draws of the latent surface, shape (n_draws, len(Xc))."""
        from scipy.linalg import solve_triangular

        K_s = self._latent(Xc, self._X)
        mean = K_s @ self._gp.alpha_
        v = solve_triangular(self._gp.L_, K_s.T, lower=True)
        cov = self._latent(Xc) - v.T @ v
        jitter = 1e-9 * max(float(np.mean(np.diag(cov))), 1e-12)
        root = _safe_cholesky(cov, jitter)
        draws = mean + rng.standard_normal((n_draws, len(Xc))) @ root.T
        return draws * self._scale + self._mu


def _safe_cholesky(cov: np.ndarray, jitter: float) -> np.ndarray:
    """Cholesky with growing jitter (nearby candidates make the matrix near-singular)."""
    for _ in range(8):
        try:
            return np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
        except np.linalg.LinAlgError:
            jitter *= 10.0
    w, U = np.linalg.eigh(cov)
    return U * np.sqrt(np.clip(w, 0.0, None))


def observed_best(observations: Sequence[Observation]) -> Observation | None:
    return max(observations, key=lambda o: o.value) if observations else None


def predicted_optimum(surrogate: Surrogate, cands: Sequence[Mapping[str, Any]]) -> Prediction:
    mean, sd = surrogate.predict(cands)
    i = int(np.argmax(mean))
    return Prediction(params=dict(cands[i]), mean=float(mean[i]), sd=float(sd[i]),
                      lower=float(mean[i] - Z95 * sd[i]), upper=float(mean[i] + Z95 * sd[i]))


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


def compute_answer(space: Sequence[ParamSpec], observations: Sequence[Observation], *,
                   seed: int = 0, stop: Mapping[str, Any] | None = None,
                   per_axis: int = 41) -> Answer:
    """The full answer; the GP needs at least 3 complete trials (else only the observed best).

    ``stop`` holds the keyword arguments of ``stop_decision`` (min_trials, epsilon,
    probability) to evaluate the stop rule too.
    """
    from threadpoolctl import threadpool_limits

    obs = [o for o in observations if math.isfinite(o.value)]
    if len(obs) < 3:
        return Answer(n_complete=len(obs), observed_best=observed_best(obs), predicted=None)
    # Small dense algebra: BLAS threads only add contention (and the trainer wants the cores).
    with threadpool_limits(1):
        return _answer(space, obs, seed=seed, stop=stop, per_axis=per_axis)


def _answer(space: Sequence[ParamSpec], obs: Sequence[Observation], *, seed: int,
            stop: Mapping[str, Any] | None, per_axis: int) -> Answer:
    surrogate = Surrogate(space, obs, seed=seed)
    cands = space_mod.candidates(space, per_axis=per_axis, seed=seed)
    decision = None
    if stop is not None:
        decision = stop_decision(surrogate, cands, n_complete=len(obs), seed=seed, **stop)
    return Answer(n_complete=len(obs), observed_best=observed_best(obs),
                  predicted=predicted_optimum(surrogate, cands), stop=decision)
