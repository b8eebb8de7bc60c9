"""An Optuna sampler on the answer's surrogate: the thin adapter around
``optimizer.science.acquisition.propose`` (the knowledge gradient by default).

The study stays a normal Optuna study (any Optuna tool reads it); only the
proposals change. Until ``n_startup_trials`` trials are complete (the enqueued
start-up design covers them) and for parameters outside the declared space, the
independent sampler (uniform random) answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from optimizer.science.acquisition import ACQUISITIONS, propose
from optimizer.science.space import ParamSpec, to_distributions
from optimizer.science.surrogate import Observation

log = logging.getLogger(__name__)


class SurrogateSampler(BaseSampler):
    """Proposals from the GP that also gives the study's answer (``acquisition``: ``"kg"``,
    the knowledge gradient, or ``"ei"``, expected improvement with margin ``xi``)."""

    def __init__(self, *, space: Sequence[ParamSpec], n_startup_trials: int, seed: int,
                 observations: Callable[[Sequence[FrozenTrial]], list[Observation]],
                 xi: float = 0.0, acquisition: str = "kg") -> None:
        if acquisition not in ACQUISITIONS:
            raise ValueError(f"acquisition must be one of {ACQUISITIONS}, not {acquisition!r}")
        self._space = tuple(space)
        self._distributions = to_distributions(self._space)
        self._n_startup = n_startup_trials
        self._seed = seed
        self._observations = observations
        self._xi = xi
        self._acquisition = acquisition
        self._independent = RandomSampler(seed=seed)

    def infer_relative_search_space(self, study: Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        trials = study.get_trials(deepcopy=False)
        obs = self._observations(trials)
        if len(obs) < max(self._n_startup, 3):
            return {}
        pending = [dict(t.params) for t in trials if t.state == TrialState.RUNNING
                   and t.number != trial.number and set(t.params) >= set(search_space)]
        # A different seed per proposal varies the candidate set where it is random, and
        # keeps two runners that ask at once from drawing the very same point.
        params = self._proposal(trials, obs, pending, seed=self._seed + trial.number)
        return {k: v for k, v in params.items() if k in search_space}

    def _proposal(self, trials: Sequence[FrozenTrial], obs: list[Observation],
                  pending: list[dict[str, Any]], *, seed: int) -> dict[str, Any]:
        """The next point from this study's own observations (subclasses widen the data)."""
        return propose(self._space, obs, pending=pending, seed=seed, xi=self._xi,
                       acquisition=self._acquisition)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._independent.reseed_rng()

