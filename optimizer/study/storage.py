"""Storage and study plumbing: open the RDB, create or load one Optuna study per distribution.

Study names are ``<study>/<distribution label>``; each study carries its
configuration fingerprint (searched space and fixed trial fields) as a user
attribute, so resuming with a changed study file fails loudly instead of mixing
incomparable trials. Everything stays plain Optuna RDB, readable by
optuna-dashboard.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from optimizer.science import space as space_mod
from optimizer.science.answer import Answer, compute_answer
from optimizer.science.noise import NoiseEstimate, estimate_noise, per_problem_scores
from optimizer.science.surrogate import Observation
from optimizer.study.faults import describe
from optimizer.study.seeding import PerTrialSeeded
from optimizer.study.storageurl import redact, refuse_non_database, sqlite_path
from optimizer.study.studyfile import DistributionSpec, StudyConfig
from trainer.errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_ATTR = "scalefed:config"
STOPPED_ATTR = "scalefed:stopped"  # set (with the reason) when the stop rule ends a study


def open_storage(url: str) -> RDBStorage:
    """An RDBStorage for ``url``; creates the directory of a SQLite file.

    An existing file that is not a SQLite database is refused, never turned into one.
    (Which URLs a server may open at all is ``optimizer.service.policy``'s decision.)
    """
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if path is not None:
        refuse_non_database(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Several threads (and maybe processes) write: wait on the file lock, don't fail.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    error: Exception | None = None
    for attempt in range(4):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs)
        except Exception as exc:  # noqa: BLE001 - sqlalchemy raises many types
            # Optuna's schema creation is not safe against a concurrent creator: runners that
            # start together on an empty database collide once, then find the schema there.
            error = exc
            time.sleep(0.2 * (attempt + 1))
    why = describe(error)[1] if error is not None else "unknown error"
    raise ConfigError("storage", f"cannot open {redact(url)!r}: {why}",
                      accepted="a reachable sqlite:/// or postgresql:// URL") from error


def make_sampler(cfg: StudyConfig, index: int, *,
                 storage: optuna.storages.BaseStorage | None = None) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded per distribution and per trial.

    ``surrogate`` (the default, by measurement in tests/benchmarks/bench_sampler.py): the
    knowledge gradient of the answer's own GP and noise model (``optimizer.study.sampler``),
    so proposals and answer share one model; with ``surrogate = "shared"`` on the GP shared
    by the family's distributions in ``storage`` (``optimizer.study.shared_sampler``).
    ``optuna-gp``: Optuna's GPSampler, which fits one noise level of its own.
    Both start once ``n_startup_trials`` trials (the enqueued start-up design) are complete.
    Each trial gets its own sampler, seeded from its number (``optimizer.study.seeding``),
    so runner processes sharing the study do not draw the same points.
    """
    n_startup = cfg.sampler.n_startup_trials
    make: Callable[[int], optuna.samplers.BaseSampler]
    if cfg.sampler.kind == "optuna-gp":
        def make(seed: int) -> optuna.samplers.BaseSampler:
            return optuna.samplers.GPSampler(
                seed=seed, n_startup_trials=n_startup,
                deterministic_objective=False,  # pass@k is noisy: let the GP fit a noise variance
                warn_independent_sampling=False)
    elif cfg.sampler.surrogate == "shared" and storage is not None:
        from optimizer.study.shared_sampler import SharedSurrogateSampler

        shared_storage = storage

        def make(seed: int) -> optuna.samplers.BaseSampler:
            return SharedSurrogateSampler(cfg=cfg, dist=cfg.distributions[index],
                                          storage=shared_storage, seed=seed)
    else:
        from optimizer.study.sampler import SurrogateSampler

        def make(seed: int) -> optuna.samplers.BaseSampler:
            return SurrogateSampler(space=cfg.space, n_startup_trials=n_startup, seed=seed,
                                    observations=observations)
    return PerTrialSeeded(seed=cfg.seed + 1000 * index, make=make)


def fingerprint(cfg: StudyConfig, dist: DistributionSpec) -> dict[str, Any]:
    space = [{"name": p.name, "low": p.low, "high": p.high, "log": p.log,
              "choices": list(p.choices) if p.choices is not None else None} for p in cfg.space]
    return {"space": space, "fixed": cfg.base_params(dist)}


def _check_fingerprint(study: optuna.Study, cfg: StudyConfig, dist: DistributionSpec) -> None:
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        return
    now = json.loads(json.dumps(fingerprint(cfg, dist), default=str))
    if stored["space"] != now["space"]:
        raise ConfigError("space", f"differs from the one study {study.study_name!r} was run with",
                          accepted=json.dumps(stored["space"]))
    for key in sorted(set(stored["fixed"]) | set(now["fixed"])):
        if stored["fixed"].get(key) != now["fixed"].get(key):
            raise ConfigError(f"profile.{key}", f"is {now['fixed'].get(key)!r} but study "
                              f"{study.study_name!r} was run with it",
                              accepted=repr(stored["fixed"].get(key)))


def create_or_load(cfg: StudyConfig, dist: DistributionSpec, storage: RDBStorage, *,
                   must_exist: bool) -> optuna.Study:
    """Load the distribution's study, or create it and enqueue its start-up design.

    Only the process that wins the (unique-name) creation enqueues the design, so
    several runners starting at once never duplicate it.
    """
    name = cfg.study_name(dist)
    index = cfg.distributions.index(dist)
    sampler = make_sampler(cfg, index, storage=storage)
    exists = name in optuna.get_all_study_names(storage)
    if must_exist and not exists:
        raise ConfigError("name", f"no study {name!r} in {cfg.storage_url}",
                          accepted="a study started with `scalefed study run`")
    if not exists:
        try:
            study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                        direction="maximize")
        except DuplicatedStudyError:
            pass  # another runner created it first
        else:
            study.set_user_attr(CONFIG_ATTR, json.loads(json.dumps(fingerprint(cfg, dist),
                                                                   default=str)))
            study.set_user_attr("distribution", dist.label)
            for params in cfg.initial_points:
                study.enqueue_trial(dict(params), user_attrs={"design": True})
            for params in startup_design(cfg, index):
                study.enqueue_trial(params, user_attrs={"design": True})
            return study
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    _check_fingerprint(study, cfg, dist)
    return study


def startup_design(cfg: StudyConfig, index: int) -> list[dict[str, Any]]:
    """The Sobol part of distribution ``index``'s start-up design (after ``initial_points``).

    Independent surrogates: its own scrambled Sobol design (seed ``cfg.seed + index``).
    A shared surrogate fits one surface to the whole family, so the family gets one
    joint design, dealt to the distributions (``space.sliced_design_points``): together
    their start-up points fill the space instead of overlapping. Both depend on the
    study file alone, so every runner creating the study enqueues the same points.
    """
    n_sobol = cfg.sampler.n_startup_trials - len(cfg.initial_points)
    if cfg.sampler.surrogate == "shared":
        return space_mod.sliced_design_points(cfg.space, n_sobol, seed=cfg.seed, index=index,
                                              n_slices=len(cfg.distributions))
    return space_mod.design_points(cfg.space, n_sobol, seed=cfg.seed + index)


def existing_studies(cfg: StudyConfig, storage: RDBStorage) -> list[DistributionSpec]:
    names = set(optuna.get_all_study_names(storage))
    return [d for d in cfg.distributions if cfg.study_name(d) in names]


def observations(trials: Sequence[FrozenTrial], *,
                 noise: NoiseEstimate | None = None) -> list[Observation]:
    """The complete trials as the science sees them: value, and the noise of that value
    relative to the study's other trials (``noise``, fitted by ``study_noise`` unless the
    caller has it already); a trial without per-problem counts keeps its own standard error."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if noise is None:
        noise = study_noise(done)
    return [Observation(number=t.number, params=t.params, value=float(t.value),
                        stderr=noise.trial_sd if noise is not None and _counts(t) is not None
                        else float(t.user_attrs.get("stderr", 0.0)))
            for t in done if t.value is not None]


def _counts(trial: FrozenTrial) -> tuple[int, int, tuple[int, ...]] | None:
    result = trial.user_attrs.get("result") or {}
    correct = result.get("correct")
    if not correct or "k" not in result:
        return None
    return int(result["n"]), int(result["k"]), tuple(int(c) for c in correct)


def study_noise(trials: Sequence[FrozenTrial]) -> NoiseEstimate | None:
    """The noise model fitted on the complete trials' per-problem counts (None when fewer
    than two trials carry them). Trials scored on another (n, k, problem count) than the
    most common one are left out of the fit."""
    rows = [c for c in (_counts(t) for t in trials if t.state == TrialState.COMPLETE)
            if c is not None]
    if not rows:
        return None
    shapes = Counter((n, k, len(c)) for n, k, c in rows)
    (n, k, size), _ = shapes.most_common(1)[0]
    same = [c for rn, rk, c in rows if (rn, rk, len(c)) == (n, k, size)]
    if len(same) < 2 or size < 2:
        return None
    return estimate_noise(per_problem_scores(same, n=n, k=k))


def study_answer(cfg: StudyConfig, trials: Sequence[FrozenTrial], *,
                 stop: dict[str, Any] | None = None, regions: bool = True) -> Answer:
    """The science's answer over a study's stored trials, with its noise model: the
    GP sees each trial's noise relative to the others, the level CI the shared part."""
    noise = study_noise(trials)
    return compute_answer(cfg.space, observations(trials, noise=noise), seed=cfg.seed, stop=stop,
                          epsilon=cfg.stop.epsilon, regions=regions,
                          level_se=noise.between_problem_se if noise is not None else 0.0)
