"""Domain-level study API: start/resume/stop/list/get/best, returning plain dataclasses.

The CLI uses it synchronously; an ``OptimizerService`` gRPC servicer can wrap
``StudyManager`` one-to-one (start/resume run in background threads, ``stop``
halts them gracefully, and every reply is a dataclass to map onto a message).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from optimizer.science import answer as answer_mod
from optimizer.science.verification import Lift
from optimizer.study import storage as store
from optimizer.study.backends import SyntheticBackend, TrialBackend, make_backends
from optimizer.study.endpoints import TrainerEndpoint
from optimizer.study.runner import RunOutcome, StudyRunner, trial_summary
from optimizer.study.shared import (
    distribution_answer,
    is_shared,
    own_h,
    parse_label,
    shared_answer,
)
from optimizer.study.storageurl import clip, redact, sqlite_path
from optimizer.study.studyfile import DistributionSpec, StudyConfig
from optimizer.study.verify import stored_lift
from trainer.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DistributionStatus:
    """One distribution's study: progress and its current answer."""

    study_name: str
    label: str
    exists: bool
    states: Mapping[str, int] = field(default_factory=dict)
    n_trials: int = 0
    stopped: str | None = None  # the stop-rule reason, once met
    answer: answer_mod.Answer | None = None
    verification: Lift | None = None  # `scalefed study verify`: lift over FedAvg
    heterogeneity: float | None = None  # mean TV distance of its split (study.heterogeneity)
    # No trial of its own: the answer is the shared surrogate's prediction at its h.
    predicted: bool = False


@dataclass(frozen=True, kw_only=True)
class StudyStatus:
    name: str
    storage: str
    running: bool
    distributions: tuple[DistributionStatus, ...]


BackendFactory = Callable[[StudyConfig], Sequence[TrialBackend]]


def backends_for(cfg: StudyConfig, kind: str, *, synthetic: SyntheticBackend | None = None,
                 endpoints: Sequence[TrainerEndpoint] | None = None) -> list[TrialBackend]:
    """The study's backends for a runner its operator starts (``scalefed study run``).

    The study file is the operator's own here, so its endpoints are dialled as written
    (plaintext, $SCALEFED_TRAINER_TOKEN) unless ``endpoints`` (with TLS settings) replace them.
    """
    t = cfg.trainer
    if endpoints is None:
        endpoints = [TrainerEndpoint(address=a) for a in t.endpoints]
    return make_backends(kind, endpoints=endpoints, workers=t.workers, function=t.function,
                         synthetic=synthetic)


def definition_difference(known: StudyConfig, new: StudyConfig) -> str | None:
    """The first field (dotted) where two definitions of one study differ, or None.

    ``n_trials`` (the budget grows on resume) and ``source`` (where the text came from)
    may differ: everything else is the study's definition.
    """
    for f in dataclasses.fields(StudyConfig):
        old, now = getattr(known, f.name), getattr(new, f.name)
        if f.name in ("n_trials", "source") or old == now:
            continue
        if dataclasses.is_dataclass(old) and not isinstance(old, type):
            for sub in dataclasses.fields(old):
                if getattr(old, sub.name) != getattr(now, sub.name):
                    return f"{f.name}.{sub.name}"
        return f.name
    return None


def _value_of(cfg: StudyConfig, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def run_study(cfg: StudyConfig, backends: Sequence[TrialBackend], *, resume: bool,
              labels: Sequence[str] | None = None, n_trials: int | None = None,
              halt: threading.Event | None = None,
              on_start: Callable[[StudyRunner], None] | None = None,
              on_complete: Callable[[FrozenTrial], None] | None = None) -> list[RunOutcome]:
    """Run (or resume) each selected distribution's study in turn; blocks until done."""
    dists = [cfg.distribution(label) for label in labels] if labels else list(cfg.distributions)
    storage = store.open_storage(cfg.storage_url)
    if resume and not store.existing_studies(cfg, storage):
        raise ConfigError("name", f"no study {cfg.name!r} in {cfg.storage_url}",
                          accepted="a study started with `scalefed study run`")
    outcomes = []
    for dist in dists:  # on resume, distributions the interrupted run never reached start now
        if halt is not None and halt.is_set():
            break
        runner = StudyRunner(cfg=cfg, dist=dist, storage=storage, backends=backends,
                             n_trials=n_trials, halt=halt,
                             on_complete=on_complete)
        if on_start is not None:
            on_start(runner)
        outcomes.append(runner.run())
    return outcomes


def distribution_status(cfg: StudyConfig, label: str, *, with_answer: bool = True,
                        storage: Any = None) -> DistributionStatus:
    """One distribution's progress and answer. A label the study file does not list
    (``dirichlet-0.3``) is answered by the shared surrogate at the h of its split."""
    labels = [d.label for d in cfg.distributions]
    listed = label in labels
    try:
        dist = cfg.distribution(label) if listed else parse_label(label)
    except ConfigError as exc:
        raise ConfigError("distribution", f"unknown distribution {clip(repr(label), 80)}",
                          accepted=f"{', '.join(labels)}, or a label never run: {exc.accepted}"
                          ) from None
    storage = storage or store.open_storage(cfg.storage_url)
    name = cfg.study_name(dist)
    if not listed or dist not in store.existing_studies(cfg, storage):
        return _predicted_status(cfg, dist, storage, with_answer=with_answer and (
            not listed or is_shared(cfg)), n_trials=cfg.n_trials if listed else 0)
    study = store.create_or_load(cfg, dist, storage, must_exist=True)
    trials = study.get_trials(deepcopy=False)
    ans, h = None, own_h(trials)
    if with_answer:
        ans, h = distribution_answer(cfg, storage, dist, trials)
    return DistributionStatus(study_name=name, label=label, exists=True,
                              states=trial_summary(trials), n_trials=cfg.n_trials,
                              stopped=study.user_attrs.get(store.STOPPED_ATTR), answer=ans,
                              verification=stored_lift(study.user_attrs), heterogeneity=h)


def _predicted_status(cfg: StudyConfig, dist: DistributionSpec, storage: Any, *,
                      with_answer: bool, n_trials: int) -> DistributionStatus:
    """A distribution without a study of its own: predicted, when asked, from the others."""
    name = cfg.study_name(dist)
    if not with_answer:
        return DistributionStatus(study_name=name, label=dist.label, exists=False,
                                  n_trials=n_trials)
    try:
        pred = shared_answer(cfg, storage, dist)
    except (ConfigError, OSError) as exc:
        if n_trials == 0:
            raise  # the label was asked for: say why it has no answer
        # A listed distribution not started yet keeps its row even where its split cannot
        # be computed here (a corpus only the workers can read).
        log.warning("%s: no prediction (%s)", dist.label, exc)
        return DistributionStatus(study_name=name, label=dist.label, exists=False,
                                  n_trials=n_trials)
    return DistributionStatus(study_name=name, label=dist.label, exists=False,
                              n_trials=n_trials, answer=pred.answer,
                              heterogeneity=pred.heterogeneity, predicted=True)


def study_status(cfg: StudyConfig, *, with_answer: bool = True) -> StudyStatus:
    storage = store.open_storage(cfg.storage_url)
    dists = tuple(distribution_status(cfg, d.label, with_answer=with_answer, storage=storage)
                  for d in cfg.distributions)
    return StudyStatus(name=cfg.name, storage=cfg.storage_url, running=False, distributions=dists)


def is_stored(cfg: StudyConfig) -> bool:
    """Whether any of the study's distributions is in its storage.

    A SQLite file that does not exist is not opened (opening would create it).
    """
    path = sqlite_path(cfg.storage_url)
    if path is not None and not path.exists():
        return False
    return bool(store.existing_studies(cfg, store.open_storage(cfg.storage_url)))


def completed_trials(cfg: StudyConfig, label: str) -> list[FrozenTrial]:
    storage = store.open_storage(cfg.storage_url)
    study = store.create_or_load(cfg, cfg.distribution(label), storage, must_exist=True)
    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


class StudyManager:
    """Runs studies in background threads; the API a gRPC servicer maps onto.

    ``backend_factory`` turns a study config into its trial backends (synthetic,
    in-process or gRPC), so the servicer decides where trials run.
    """

    def __init__(self, *, backend_factory: BackendFactory) -> None:
        self._factory = backend_factory
        self._lock = threading.Lock()
        self._configs: dict[str, StudyConfig] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._halts: dict[str, threading.Event] = {}
        self._errors: dict[str, BaseException] = {}

    def start(self, cfg: StudyConfig, *, resume: bool = False) -> StudyStatus:
        """Start (or resume) a study in the background. Errors in the config raise now.

        Nothing is registered unless the study starts: a refused definition, backend or
        storage leaves the manager as it was.
        """
        with self._lock:
            self.check_identity(cfg)
            if self._is_running(cfg.name):
                raise ConfigError("name", f"study {cfg.name!r} is already running",
                                  accepted="a study that is not running")
            backends = list(self._factory(cfg))
            store.open_storage(cfg.storage_url)  # a storage that cannot open fails here
            halt = threading.Event()
            thread = threading.Thread(target=self._run, args=(cfg, backends, resume, halt),
                                      name=f"study-{cfg.name}", daemon=True)
            self._configs[cfg.name], self._halts[cfg.name] = cfg, halt
            self._errors.pop(cfg.name, None)
            self._threads[cfg.name] = thread
            thread.start()
        return self.get(cfg.name, with_answer=False)

    def check_identity(self, cfg: StudyConfig) -> None:
        """A known name keeps its storage and definition: another one is a ConfigError."""
        known = self._configs.get(cfg.name)
        if known is None:
            return
        if known.storage_url != cfg.storage_url:
            raise ConfigError("storage", f"study {cfg.name!r} is stored in "
                              f"{redact(known.storage_url)} on this server",
                              accepted=f"{redact(known.storage_url)}, or a new study name")
        diff = definition_difference(known, cfg)
        if diff is not None:
            raise ConfigError(diff, f"differs from study {cfg.name!r} as this server runs it; "
                              "a study's definition cannot change",
                              accepted=f"{clip(repr(_value_of(known, diff)))}, or a new study name")

    def resume(self, cfg: StudyConfig) -> StudyStatus:
        return self.start(cfg, resume=True)

    def _run(self, cfg: StudyConfig, backends: list[TrialBackend], resume: bool,
             halt: threading.Event) -> None:
        try:
            run_study(cfg, backends, resume=resume, halt=halt)
        except BaseException as exc:
            log.exception("study %s failed", cfg.name)
            self._errors[cfg.name] = exc

    def stop(self, name: str, *, wait: bool = True) -> StudyStatus:
        """Halt a running study: running trials are cancelled and re-queued for resume."""
        cfg = self._config(name)
        self._halts[name].set()
        thread = self._threads.get(name)
        if wait and thread is not None:
            thread.join()
        return self.get(cfg.name, with_answer=False)

    def list(self) -> list[StudyStatus]:
        return [self.get(name, with_answer=False) for name in self.names()]

    def names(self) -> tuple[str, ...]:
        """The names of the studies this manager knows, sorted."""
        with self._lock:
            return tuple(sorted(self._configs))

    def config(self, name: str) -> StudyConfig:
        """The definition of a known study (ConfigError on field ``study`` otherwise)."""
        return self._config(name)

    def is_running(self, name: str) -> bool:
        return self._is_running(name)

    def get(self, name: str, *, with_answer: bool = True) -> StudyStatus:
        cfg = self._config(name)
        # Liveness before the storage: a study that ends while its trials are read must not
        # read as finished with a trial still RUNNING (its last tell came after the read).
        running = self._is_running(name)
        status = study_status(cfg, with_answer=with_answer)
        return StudyStatus(name=status.name, storage=status.storage, running=running,
                           distributions=status.distributions)

    def best(self, name: str, distribution: str) -> DistributionStatus:
        """The answer for one distribution (observed best and predicted optimum); a label
        the study never ran is predicted by the shared surrogate at its split's h."""
        return distribution_status(self._config(name), distribution)

    def error(self, name: str) -> BaseException | None:
        return self._errors.get(name)

    def register(self, cfg: StudyConfig) -> None:
        """Make an existing (e.g. finished) study known without running it.

        The same definition again is a no-op; another one under a known name is refused.
        """
        with self._lock:
            self.check_identity(cfg)
            self._configs.setdefault(cfg.name, cfg)

    def _is_running(self, name: str) -> bool:
        thread = self._threads.get(name)
        return thread is not None and thread.is_alive()

    def _config(self, name: str) -> StudyConfig:
        if name not in self._configs:
            known = sorted(self._configs)
            listed = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20
                                              else "")
            raise ConfigError("study", f"unknown study {clip(repr(name))}",
                              accepted=listed or "none registered")
        return self._configs[name]
