"""The study's surrogate: a Gaussian process over the [0, 1]^d encoded space.

Science only: plain arrays and dataclasses in and out. A scikit-learn GP
(constant x Matern-5/2 with one lengthscale per unit coordinate, plus a
WhiteKernel) on the encoding of ``optimizer.science.space``, with each trial's
own reported standard error added to its diagonal (so noisy trials count less).
Bounds act as priors: the signal SD is at least the typical trial noise (a study
is only worth running for an effect that large) and the lengthscales lie in
[0.05, 1] of each unit axis.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optimizer.science import space as space_mod
from optimizer.science.space import ParamSpec


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
