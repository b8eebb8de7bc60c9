"""The study's surrogate: a Gaussian process over the [0, 1]^d encoded space.

Science only: plain arrays and dataclasses in and out. A scikit-learn GP
(constant x Matern-5/2 with one lengthscale per unit coordinate, plus a
WhiteKernel) on the encoding of ``optimizer.science.space``, with each trial's
own reported standard error added to its diagonal (so noisy trials count less).
The signal SD is at least the typical trial noise (a study is only worth running
for an effect that large). Each lengthscale lies in [0.05, 1] of its unit axis and
has a log-normal prior (median ``LENGTHSCALE_MEDIAN`` = 0.25 of the axis), so the
hyperparameters are the posterior mode, not the marginal-likelihood maximum.
Why the prior: with a dozen noisy trials the likelihood alone prefers the
smoothest surface the data allow, a slope running into a corner of the box, and
proposals and answer then stay at that corner while the true optimum lies inside
(tests/benchmarks/bench_sampler.py --optimum 2.8,0.25: median trials to within 0.03
of the optimum with knowledge-gradient proposals fell from 13.5 to 6 with it; Optuna's
GPSampler needed 7.5 and 7 in the same runs). The prior is the study's own hypothesis: an
optimum inside the box, a bump about a quarter of an axis wide, with room (the
log-SD) for twice or half that.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optimizer.science import space as space_mod
from optimizer.science.space import ParamSpec

LENGTHSCALE_MEDIAN = 0.25  # of a unit axis: the log-normal prior's median
LENGTHSCALE_LOG_SD = 0.75  # 95% of the prior mass in [0.06, 1.1]


@dataclass(frozen=True, kw_only=True)
class Observation:
    """One complete trial as the answer sees it."""

    number: int
    params: Mapping[str, Any]
    value: float
    stderr: float = 0.0


class Surrogate:
    """A fitted GP over the encoded space; ``predict`` returns the latent mean and SD."""

    def __init__(self, space: Sequence[ParamSpec], observations: Sequence[Observation], *,
                 seed: int = 0, prior_mean: float | None = None) -> None:
        """``prior_mean``: the GP's constant prior mean (value units), where the surface
        reverts away from the data; the observations' mean unless given."""
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        self.space = tuple(space)
        X = space_mod.encode_many(self.space, [o.params for o in observations])
        y = np.array([o.value for o in observations], dtype=float)
        se_raw = np.array([o.stderr for o in observations], dtype=float)
        self._mu = float(y.mean()) if prior_mean is None else float(prior_mean)
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
                                            optimizer=_map_optimizer(kernel),
                                            n_restarts_optimizer=2, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter at bounds is expected here
            self._gp.fit(X, ys)
        self._X = X
        self._latent = self._gp.kernel_.k1  # the kernel without the white noise term

    @property
    def lengthscales(self) -> np.ndarray:
        """The fitted lengthscale of each encoded coordinate, as a fraction of its unit axis."""
        return np.atleast_1d(np.asarray(self._latent.k2.length_scale, dtype=float))

    @property
    def extra_noise_var(self) -> float:
        """The fitted noise variance beyond the trials' own (value units): what a new
        trial adds on top of its reported standard error."""
        return float(self._gp.kernel_.k2.noise_level) * self._scale ** 2

    def predict_encoded(self, Xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy.linalg import solve_triangular

        K_s = self._latent(Xc, self._X)
        mean = K_s @ self._gp.alpha_
        v = solve_triangular(self._gp.L_, K_s.T, lower=True)
        var = np.maximum(self._latent.diag(Xc) - np.sum(v * v, axis=0), 1e-12)
        return mean * self._scale + self._mu, np.sqrt(var) * self._scale

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        return self.predict_encoded(space_mod.encode_many(self.space, rows))

    def posterior_cov(self, Xa: np.ndarray, Xb: np.ndarray) -> np.ndarray:
        """Latent posterior covariance between two sets of encoded points (value units)."""
        from scipy.linalg import solve_triangular

        va = solve_triangular(self._gp.L_, self._latent(Xa, self._X).T, lower=True)
        vb = solve_triangular(self._gp.L_, self._latent(Xb, self._X).T, lower=True)
        return np.asarray(self._latent(Xa, Xb) - va.T @ vb) * self._scale ** 2

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


def _map_optimizer(kernel: Any) -> Callable[..., tuple[np.ndarray, float]]:
    """An sklearn GP ``optimizer`` that adds the lengthscale prior to the negative log
    marginal likelihood (theta is log-scaled, so the log-normal prior is a quadratic)."""
    lo = 0
    for hp in kernel.hyperparameters:  # theta follows this order; find the lengthscales
        if hp.name.endswith("length_scale"):
            break
        lo += hp.n_elements
    ls = slice(lo, lo + hp.n_elements)
    mu = math.log(LENGTHSCALE_MEDIAN)

    def optimize(obj_func: Callable[..., Any], theta0: np.ndarray,
                 bounds: np.ndarray) -> tuple[np.ndarray, float]:
        from scipy.optimize import minimize

        def penalised(theta: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = obj_func(theta, eval_gradient=True)
            dev = (theta[ls] - mu) / LENGTHSCALE_LOG_SD
            grad = np.array(grad, dtype=float)
            grad[ls] += dev / LENGTHSCALE_LOG_SD
            return float(value) + 0.5 * float(dev @ dev), grad

        res = minimize(penalised, theta0, jac=True, method="L-BFGS-B", bounds=bounds)
        return res.x, float(res.fun)

    return optimize


def _safe_cholesky(cov: np.ndarray, jitter: float) -> np.ndarray:
    """Cholesky with growing jitter (nearby candidates make the matrix near-singular)."""
    for _ in range(8):
        try:
            return np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
        except np.linalg.LinAlgError:
            jitter *= 10.0
    w, U = np.linalg.eigh(cov)
    return U * np.sqrt(np.clip(w, 0.0, None))
