"""One surrogate over (s, p, h) shared by every distribution of a study family.

Each distribution stays a normal Optuna study; its trials carry the heterogeneity
``h`` of their split (``optimizer.study.heterogeneity``). The shared surrogate is the
answer's own GP (``optimizer.science.surrogate``) on the study's space plus one more
unit coordinate, :data:`H_PARAM`, fitted on the complete trials of every study named
``<name>/<label>`` in the storage, each trial with the noise its own study's noise
model gives it (``storage.observations``). A distribution's answer and proposals are
that surface held at its own ``h``; a label that was never run gets the surface at the
``h`` of its split, computed without training, marked as a prediction.

``[sampler] surrogate = "shared"`` makes studied distributions use it too (proposals
and answers); ``independent`` keeps one GP per distribution, and only labels without
trials of their own are predicted by the shared fit.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from optimizer.science.answer import Answer, compute_answer, observed_best
from optimizer.science.noise import NoiseEstimate
from optimizer.science.space import ParamSpec
from optimizer.science.surrogate import Observation
from optimizer.study import storage as store
from optimizer.study.heterogeneity import (
    CORPUS_SOURCE,
    HETEROGENEITY_ATTR,
    SYNTHETIC_SOURCE,
    split_heterogeneity,
)
from optimizer.study.studyfile import DISTRIBUTION_KINDS, DistributionSpec, StudyConfig
from trainer.errors import ConfigError
from trainer.helptext import meta

log = logging.getLogger(__name__)

H_NAME = HETEROGENEITY_ATTR
H_PARAM = ParamSpec(name=H_NAME, low=0.0, high=1.0)


def is_shared(cfg: StudyConfig) -> bool:
    return cfg.sampler.surrogate == "shared"


def shared_space(cfg: StudyConfig) -> tuple[ParamSpec, ...]:
    """The study's space plus the heterogeneity coordinate."""
    return (*cfg.space, H_PARAM)


def parse_label(label: str) -> DistributionSpec:
    """``iid``, ``natural`` or ``dirichlet-<alpha>`` as a distribution (listed or not)."""
    kind, _, alpha = label.partition("-")
    accepted = "iid, natural or dirichlet-<alpha> with alpha > 0 (e.g. dirichlet-0.3)"
    if kind not in DISTRIBUTION_KINDS or bool(alpha) != (kind == "dirichlet"):
        raise ConfigError("distribution", f"unknown distribution {label[:64]!r}",
                          accepted=accepted)
    if kind != "dirichlet":
        return DistributionSpec(kind=kind)
    try:
        value = float(alpha)
    except ValueError:
        value = math.nan
    if not 0.0 < value <= 1e6:
        raise ConfigError("distribution", f"alpha in {label[:64]!r} is not a number > 0",
                          accepted=accepted)
    return DistributionSpec(kind="dirichlet", alpha=value)


def trial_h(trial: FrozenTrial) -> float | None:
    value = trial.user_attrs.get(HETEROGENEITY_ATTR)
    return float(value) if isinstance(value, (int, float)) else None


def own_h(trials: Sequence[FrozenTrial]) -> float | None:
    """The distribution's ``h``: its trials share one split, so this is their common value."""
    values = [h for t in trials if t.state == TrialState.COMPLETE and (h := trial_h(t)) is not None]
    return float(np.median(values)) if values else None


def with_h(trials: Sequence[FrozenTrial], *,
           noise: NoiseEstimate | None = None) -> list[Observation]:
    """One study's observations with ``h`` added; trials without an ``h`` are left out.

    ``noise`` is the family's noise model: every distribution of a family shares the
    problems and the seeds, so one two-way fit over all their trials estimates a
    trial's noise relative to the others better than a few trials of one study can."""
    hs = {t.number: trial_h(t) for t in trials}
    return [dataclasses.replace(o, params={**o.params, H_NAME: hs[o.number]})
            for o in store.observations(trials, noise=noise) if hs.get(o.number) is not None]


def pooled(studies: dict[str, list[FrozenTrial]]) -> list[Observation]:
    """Every family study's observations with ``h``, under the family's noise model."""
    noise = store.study_noise([t for ts in studies.values() for t in ts])
    return [o for ts in studies.values() for o in with_h(ts, noise=noise)]


def family(cfg: StudyConfig, storage: BaseStorage) -> dict[str, list[FrozenTrial]]:
    """Every study of the family in ``storage`` (same space) -> its trials, by label."""
    space = store.fingerprint(cfg, cfg.distributions[0])["space"]
    out: dict[str, list[FrozenTrial]] = {}
    prefix = f"{cfg.name}/"
    for frozen in storage.get_all_studies():
        if not frozen.study_name.startswith(prefix):
            continue
        stored = frozen.user_attrs.get(store.CONFIG_ATTR) or {}
        if stored.get("space") != space:
            log.warning("%s searched another space: left out of the shared surrogate",
                        frozen.study_name)
            continue
        label = frozen.study_name[len(prefix):]
        study_id = storage.get_study_id_from_name(frozen.study_name)
        out[label] = storage.get_all_trials(study_id, deepcopy=False)
    return out


def family_observations(cfg: StudyConfig, storage: BaseStorage, *, label: str,
                        trials: Sequence[FrozenTrial] | None = None) -> list[Observation]:
    """The shared surrogate's data: every family study's observations with ``h``
    (``trials``, when given, replace the stored ones of ``label``, e.g. fresher ones)."""
    studies = family(cfg, storage)
    if trials is not None:
        studies[label] = list(trials)
    return pooled(studies)


def h_source(studies: dict[str, list[FrozenTrial]]) -> str:
    """How the family's trials got their ``h``: the synthetic split or the corpus."""
    for trials in studies.values():
        for t in trials:
            record = t.user_attrs.get("record")
            if isinstance(record, dict) and trial_h(t) is not None:
                return SYNTHETIC_SOURCE if record.get("backend") == "synthetic" else CORPUS_SOURCE
    return CORPUS_SOURCE


@dataclass(frozen=True, kw_only=True)
class SharedAnswer:
    """An answer of the shared surrogate at one heterogeneity."""

    answer: Answer | None = field(metadata=meta("None until 3 family trials carry an h"))
    heterogeneity: float | None = field(metadata=meta("the h the surface was held at"))
    predicted: bool = field(metadata=meta("no trial of its own: a prediction from the others"))


def shared_answer(cfg: StudyConfig, storage: BaseStorage, dist: DistributionSpec, *,
                  trials: Sequence[FrozenTrial] | None = None, stop: dict[str, Any] | None = None,
                  regions: bool = True) -> SharedAnswer:
    """The shared surface at ``dist``'s ``h``: its trials' own ``h``, or for a label
    without trials the ``h`` of its split, computed from the split alone."""
    studies = family(cfg, storage)
    if trials is not None:
        studies[dist.label] = list(trials)
    own = studies.get(dist.label, [])
    h = own_h(own)
    predicted = h is None
    if h is None:
        if not any(trial_h(t) is not None for ts in studies.values() for t in ts):
            return SharedAnswer(answer=None, heterogeneity=None, predicted=True)
        h = split_heterogeneity(cfg.base_params(dist), source=h_source(studies))
    obs = pooled(studies)
    # The level's between-problem SE: the family shares the problems, so a label never
    # run gets the family's.
    noise = store.study_noise(own) or store.study_noise([t for ts in studies.values() for t in ts])
    ans = compute_answer(shared_space(cfg), obs, seed=cfg.seed, stop=stop, regions=regions,
                         epsilon=cfg.stop.epsilon, fixed={H_NAME: h},
                         level_se=noise.between_problem_se if noise is not None else 0.0)
    mine = store.observations(own)
    ans = dataclasses.replace(ans, n_complete=len(mine), observed_best=observed_best(mine),
                              predicted=_drop_h(ans))
    return SharedAnswer(answer=ans, heterogeneity=h, predicted=predicted)


def _drop_h(ans: Answer) -> Any:
    pred = ans.predicted
    if pred is None:
        return None
    return dataclasses.replace(pred, params={k: v for k, v in pred.params.items() if k != H_NAME})


def distribution_answer(cfg: StudyConfig, storage: BaseStorage, dist: DistributionSpec,
                        trials: Sequence[FrozenTrial], *, stop: dict[str, Any] | None = None,
                        regions: bool = True) -> tuple[Answer, float | None]:
    """A studied distribution's answer under the study's surrogate switch, and its ``h``.

    Shared: the shared surface at the distribution's own ``h`` (its own per-study answer
    while none of its trials carries an ``h``). Independent: its own GP."""
    h = own_h(trials)
    if is_shared(cfg) and h is not None:
        shared = shared_answer(cfg, storage, dist, trials=trials, stop=stop, regions=regions)
        if shared.answer is not None:
            return shared.answer, h
    return store.study_answer(cfg, trials, stop=stop, regions=regions), h


@dataclass(frozen=True, kw_only=True)
class CurvePoint:
    """The optimum at one heterogeneity, with the bounds of its 90% region."""

    h: float = field(metadata=meta("heterogeneity the surface was held at"))
    label: str = field(metadata=meta("the studied distribution at this h, or empty"))
    params: dict[str, Any] = field(metadata=meta("the predicted optimum (without h)"))
    mean: float = field(metadata=meta("posterior mean of pass@k there"))
    bounds: dict[str, tuple[Any, ...]] = field(metadata=meta("the 90% region, per parameter"))


def curve(cfg: StudyConfig, storage: BaseStorage, *, points: int = 11) -> list[CurvePoint]:
    """s*(h), p*(h) with their 90% regions: ``points`` values of h evenly over [0, 1] and
    every studied distribution's own h, from the shared surrogate (empty while fewer
    than 3 family trials carry an h)."""
    studies = family(cfg, storage)
    obs = pooled(studies)
    if len(obs) < 3:
        return []
    grid = {round(float(h), 6): "" for h in np.linspace(0.0, 1.0, points)}
    for label, trials in studies.items():
        h = own_h(trials)
        if h is not None:
            grid[h] = label
    out = []
    for h, label in sorted(grid.items()):
        ans = compute_answer(shared_space(cfg), obs, seed=cfg.seed, epsilon=cfg.stop.epsilon,
                             fixed={H_NAME: h})
        if ans.predicted is None or ans.argmax_region is None:
            continue
        params = {k: v for k, v in ans.predicted.params.items() if k != H_NAME}
        out.append(CurvePoint(h=h, label=label, params=params, mean=ans.predicted.mean,
                              bounds=dict(ans.argmax_region.bounds)))
    return out


def family_points(cfg: StudyConfig, storage: BaseStorage) -> list[tuple[str, Observation]]:
    """Every family trial with an ``h`` as (label, observation): the trials on a curve plot."""
    return [(label, o) for label, trials in family(cfg, storage).items() for o in with_h(trials)]
