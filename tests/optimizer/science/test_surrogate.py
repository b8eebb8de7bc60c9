"""The surrogate: its lengthscale prior and its posterior covariance."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer.science import space as space_mod
from optimizer.science.space import ParamSpec
from optimizer.science.surrogate import Observation, Surrogate

SPACE = (ParamSpec(name="scaling_factor", low=0.25, high=4.0, log=True),
         ParamSpec(name="participation", low=0.1, high=1.0))


def _slope_in_s(n: int) -> list[Observation]:
    rng = np.random.default_rng(0)
    return [Observation(number=i, params=d, stderr=0.03,
                        value=0.1 + 0.2 * space_mod.encode(SPACE, d)[0] + rng.normal(0.0, 0.03))
            for i, d in enumerate(space_mod.design_points(SPACE, n, seed=0))]


def test_posterior_cov_agrees_with_predict() -> None:
    surrogate = Surrogate(SPACE, _slope_in_s(8))
    X = space_mod.encode_many(SPACE, space_mod.candidates(SPACE, per_axis=5))
    _, sd = surrogate.predict_encoded(X)
    cov = surrogate.posterior_cov(X, X)
    np.testing.assert_allclose(np.sqrt(np.clip(np.diag(cov), 0.0, None)), sd, rtol=1e-6,
                               atol=1e-9)
    np.testing.assert_allclose(cov, cov.T, atol=1e-12)


def test_lengthscale_prior_keeps_an_axis_without_signal_from_going_flat(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import optimizer.science.surrogate as surrogate_mod

    obs = _slope_in_s(8)
    # Eight noisy trials on a slope in s say nothing about p: the likelihood alone makes
    # p's lengthscale as long as allowed; the prior keeps it near a quarter of the axis.
    assert Surrogate(SPACE, obs).lengthscales[1] < 0.7
    monkeypatch.setattr(surrogate_mod, "LENGTHSCALE_LOG_SD", 1e6)  # a flat prior: plain ML
    assert Surrogate(SPACE, obs).lengthscales[1] == pytest.approx(1.0, abs=0.05)
