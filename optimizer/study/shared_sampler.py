"""The Optuna sampler of ``[sampler] surrogate = "shared"``: the knowledge gradient on the
surrogate shared across distributions (``optimizer.study.shared``), held at the study's
own heterogeneity ``h``.

The study stays a normal Optuna study. Until ``n_startup_trials`` of its own trials are
complete (the enqueued start-up design), and for parameters outside the declared space,
the independent sampler (uniform random) answers; while none of its trials carries an
``h`` yet, proposals use its own trials alone, as the independent surrogate would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from optimizer.science.acquisition import propose
from optimizer.science.surrogate import Observation
from optimizer.study import shared
from optimizer.study import storage as store
from optimizer.study.sampler import SurrogateSampler
from optimizer.study.studyfile import DistributionSpec, StudyConfig


class SharedSurrogateSampler(SurrogateSampler):
    """:class:`SurrogateSampler` on the family's shared GP at this distribution's ``h``."""

    def __init__(self, *, cfg: StudyConfig, dist: DistributionSpec, storage: BaseStorage,
                 seed: int) -> None:
        super().__init__(space=cfg.space, n_startup_trials=cfg.sampler.n_startup_trials,
                         seed=seed, observations=store.observations)
        self._cfg = cfg
        self._dist = dist
        self._storage = storage

    def _proposal(self, trials: Sequence[FrozenTrial], obs: list[Observation],
                  pending: list[dict[str, Any]], *, seed: int) -> dict[str, Any]:
        h = shared.own_h(trials)
        if h is None:
            return super()._proposal(trials, obs, pending, seed=seed)
        family = shared.family_observations(self._cfg, self._storage, label=self._dist.label,
                                            trials=trials)
        return propose(shared.shared_space(self._cfg), family, seed=seed,
                       pending=[{**p, shared.H_NAME: h} for p in pending],
                       fixed={shared.H_NAME: h}, pessimistic=True)
