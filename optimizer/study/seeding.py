"""One sampler per trial, seeded from the study seed and the trial's number.

A sampler seeded once per process makes every runner process of a shared study draw
the same random stream (the independent sampler's uniform draws, a GP's random
restarts): two processes asking at the same time proposed identical points. Here
each trial gets its own sampler, built by ``make(seed)`` with a seed derived from the
study seed and the trial *number*, which the storage hands out uniquely across
processes. No two trials share a seed, and a study run by one runner stays
reproducible (the same numbers get the same seeds). The samplers wrapped here keep
no state across trials that matters: each proposal refits on the stored trials.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

_KEEP = 16  # samplers of trials still being asked (a runner asks one trial at a time)


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number`` of a study seeded ``seed``."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class PerTrialSeeded(BaseSampler):
    """Delegates each trial to its own sampler ``make(trial_seed(seed, trial.number))``."""

    def __init__(self, *, seed: int, make: Callable[[int], BaseSampler]) -> None:
        self._seed = seed
        self._make = make
        self._lock = threading.Lock()
        self._by_trial: OrderedDict[int, BaseSampler] = OrderedDict()

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        with self._lock:
            sampler = self._by_trial.get(trial._trial_id)
            if sampler is None:
                sampler = self._make(trial_seed(self._seed, trial.number))
                self._by_trial[trial._trial_id] = sampler
                while len(self._by_trial) > _KEEP:
                    self._by_trial.popitem(last=False)
            return sampler

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name,
                                                   param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        with self._lock:
            self._by_trial.pop(trial._trial_id, None)

    def reseed_rng(self) -> None:
        """Nothing to do: every trial's seed is derived afresh from its number."""
