"""The Optuna sampler of ``[sampler] surrogate = "shared"``: expected improvement on the
surrogate shared across distributions (``optimizer.study.shared``), held at the study's
own heterogeneity ``h``.

The study stays a normal Optuna study. Until ``n_startup_trials`` of its own trials are
complete (the enqueued start-up design), and for parameters outside the declared space,
the independent sampler (uniform random) answers; while none of its trials carries an
``h`` yet, proposals use its own trials alone, as the independent surrogate would.
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.storages import BaseStorage
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from optimizer.science.acquisition import propose
from optimizer.science.space import ParamSpec, to_distributions
from optimizer.study import shared
from optimizer.study import storage as store
from optimizer.study.studyfile import DistributionSpec, StudyConfig


class SharedSurrogateSampler(BaseSampler):
    """Expected improvement on the family's shared GP at this distribution's ``h``."""

    def __init__(self, *, cfg: StudyConfig, dist: DistributionSpec, storage: BaseStorage,
                 seed: int) -> None:
        self._cfg = cfg
        self._dist = dist
        self._storage = storage
        self._space: tuple[ParamSpec, ...] = tuple(cfg.space)
        self._distributions = to_distributions(self._space)
        self._n_startup = cfg.sampler.n_startup_trials
        self._seed = seed
        self._independent = RandomSampler(seed=seed)

    def infer_relative_search_space(self, study: Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        trials = study.get_trials(deepcopy=False)
        own = store.observations(trials)
        if len(own) < max(self._n_startup, 3):
            return {}
        pending = [dict(t.params) for t in trials if t.state == TrialState.RUNNING
                   and t.number != trial.number and set(t.params) >= set(search_space)]
        # A different seed per proposal keeps two runners that ask at once apart.
        seed = self._seed + trial.number
        h = shared.own_h(trials)
        if h is None:
            params = propose(self._space, own, pending=pending, seed=seed)
        else:
            obs = shared.family_observations(self._cfg, self._storage, label=self._dist.label,
                                             trials=trials)
            params = propose(shared.shared_space(self._cfg), obs, seed=seed,
                             pending=[{**p, shared.H_NAME: h} for p in pending],
                             fixed={shared.H_NAME: h})
        return {k: v for k, v in params.items() if k in search_space}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._independent.reseed_rng()

