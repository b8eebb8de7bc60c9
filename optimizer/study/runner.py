"""The study runner: ask/tell one distribution's study against N trial backends at once.

Invariants (they hold across Ctrl-C, ``kill -9`` and several runner processes):

* every asked trial ends COMPLETE, FAIL (re-queued once as a WAITING retry unless
  its retries are spent) or PRUNED (never run: over budget, a duplicate retry, or a
  point another runner is running; see ``optimizer.study.budget``);
* the budget counts *fresh* trials (not retries) by creation order, so concurrent
  runners never overshoot ``n_trials``;
* a runner leaves no RUNNING trial behind: Ctrl-C cancels and re-queues its
  trials without consuming a retry; a killed runner's leases expire (see
  ``optimizer.study.lease``) and the next runner fails and re-queues them, again
  without consuming a retry (the runner died, not the trial);
* a trainer that is down or full is waited for with backoff before a trial is sent to
  it (``TrialBackend.unavailable``), and a trial it never started is re-queued
  without consuming a retry;
* a storage failure ends the run with one message naming the cause (``faults``); no
  new trial starts, running ones finish, and a finished result the storage refuses
  is kept in a local journal (``spool``) that the next runner writes back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from optimizer.science.space import to_distributions
from optimizer.study import budget, precision, spool
from optimizer.study import lease as lease_mod
from optimizer.study.backends import BackendResult, TrialBackend, TrialNotStartedError
from optimizer.study.faults import OutageWait, StorageError, is_storage_error, storage_error
from optimizer.study.heterogeneity import HETEROGENEITY_ATTR
from optimizer.study.shared import distribution_answer
from optimizer.study.storage import STOPPED_ATTR, create_or_load, observations
from optimizer.study.studyfile import DistributionSpec, StudyConfig
from trainer.errors import ConfigError, TrialCancelledError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RunOutcome:
    """How one distribution's run ended."""

    study_name: str
    label: str
    n_complete: int
    n_failed: int
    ended: str  # "budget", "stop rule", "halted"


def _suggest(trial: Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    raise TypeError(f"unsupported distribution {dist!r}")


def _timer_seconds(timeout_s: float) -> float:
    """``timeout_s`` as threading.Timer takes it: beyond TIMEOUT_MAX its thread dies at once
    (OverflowError), which would leave the trial with no timeout at all."""
    if not timeout_s < threading.TIMEOUT_MAX:  # also NaN
        log.warning("trainer.timeout_s=%s is beyond what a timer can wait; using %g s",
                    timeout_s, threading.TIMEOUT_MAX)
        return threading.TIMEOUT_MAX
    return timeout_s


class StudyRunner:
    """Runs one distribution's study to its budget or its stop rule.

    ``storage_patience_s`` is how long a finished result's write is retried before it is
    kept in the spool; ``outage_backoff_s`` caps the wait between probes of a trainer
    that is down.
    """

    def __init__(self, *, cfg: StudyConfig, dist: DistributionSpec, storage: RDBStorage,
                 backends: Sequence[TrialBackend], n_trials: int | None = None,
                 must_exist: bool = False, halt: threading.Event | None = None,
                 on_complete: Callable[[FrozenTrial], None] | None = None,
                 storage_patience_s: float = 60.0, outage_backoff_s: float = 5.0) -> None:
        if not backends:
            raise ConfigError("backend", "no trial backend to run on", accepted=">= 1 backend")
        self.cfg, self.dist, self.storage = cfg, dist, storage
        try:
            self.study = create_or_load(cfg, dist, storage, must_exist=must_exist)
            # Before anything reaps: a kept result completes its trial instead of a re-run.
            spool.restore(spool.spool_path(cfg.storage_url), self.study, storage)
        except Exception as exc:
            if is_storage_error(exc):
                raise storage_error(exc, cfg.storage_url) from exc
            raise
        self._outage_backoff_s = outage_backoff_s
        self.n_trials = n_trials or cfg.n_trials
        self._backends = list(backends)
        self._dists = to_distributions(cfg.space)
        self._base = cfg.base_params(dist)
        self._halt = halt or threading.Event()
        self._on_complete = on_complete
        self._lock = threading.Lock()  # Study.ask/tell and the GP sampler are not thread-safe
        self._running: dict[int, threading.Event] = {}
        self._errors: list[BaseException] = []
        self._no_new_trials = threading.Event()  # the storage failed: finish, start nothing
        self._results = spool.ResultKeeper(study=self.study, storage=storage,
                                           storage_url=cfg.storage_url,
                                           patience_s=storage_patience_s, stop=self._halt)

    # ------------------------------------------------------------- main loop --

    def run(self) -> RunOutcome:
        """Run until done; Ctrl-C cancels and re-queues running trials, then re-raises."""
        # Wait on our own events, not Thread.join: on CPython 3.11 a join interrupted by
        # KeyboardInterrupt can return early on the next call, and then a cancelled
        # trial's re-queue would be cut off by the process exit.
        finished = [threading.Event() for _ in self._backends]
        threads = [threading.Thread(target=self._worker, args=(b, done), daemon=True,
                                    name=f"trial-{i}")
                   for i, (b, done) in enumerate(zip(self._backends, finished, strict=True))]
        for t in threads:
            t.start()
        try:
            while not all(done.wait(0.2) for done in finished):
                pass
        except KeyboardInterrupt:
            self.halt()
            for done in finished:
                done.wait()
            raise
        if self._errors:
            raise self._final_error()
        return self._outcome()

    def halt(self) -> None:
        """Stop asking and cancel running trials (they are re-queued, not lost)."""
        self._halt.set()
        with self._lock:
            for cancel in self._running.values():
                cancel.set()

    def _worker(self, backend: TrialBackend, finished: threading.Event) -> None:
        outage = OutageWait(backend, stop=self._halt, max_s=self._outage_backoff_s)
        try:
            while not self._halt.is_set():
                if not outage.ready():
                    if self._nothing_to_ask():
                        return
                    continue
                step = self._next_trial()
                if step == "done":
                    return
                if step == "wait":
                    self._halt.wait(min(self.cfg.trainer.heartbeat_s, 2.0))
                    continue
                if isinstance(step, tuple):
                    self._execute(step[0], step[1], backend)
        except BaseException as exc:  # noqa: BLE001 - surfaced by run() in the main thread
            if isinstance(exc, Exception) and is_storage_error(exc):
                self._storage_failed(exc)
            else:
                self._errors.append(exc)
                self.halt()
        finally:
            finished.set()

    def _storage_failed(self, exc: Exception) -> None:
        """Start no new trial; running ones finish (their results are kept if need be)."""
        error = storage_error(exc, self.cfg.storage_url)
        if not self._no_new_trials.is_set():
            log.error("%s; no new trials, running ones finish first", error)
        self._errors.append(error)
        self._no_new_trials.set()

    def _final_error(self) -> BaseException:
        first = self._errors[0]
        return self._results.explain(first) if isinstance(first, StorageError) else first

    # -------------------------------------------------------------- asking --

    def _budget_spent(self, trials: Sequence[FrozenTrial]) -> bool:
        return budget.spent(trials, n_trials=self.n_trials,
                            stopped=STOPPED_ATTR in self.study.user_attrs)

    def _nothing_to_ask(self) -> bool:
        with self._lock:
            return (self._halt.is_set() or self._no_new_trials.is_set()
                    or self._budget_spent(self.study.get_trials(deepcopy=False)))

    def _next_trial(self) -> str | tuple[Trial, lease_mod.Lease]:
        with self._lock:
            if self._halt.is_set() or self._no_new_trials.is_set():
                return "done"
            t = self.cfg.trainer
            lease_mod.reap_stale(self.study, self.storage, lease_s=t.lease_s,
                                 max_retries=t.max_retries)
            trials = self.study.get_trials(deepcopy=False)
            if self._budget_spent(trials):
                running = any(x.state == TrialState.RUNNING for x in trials)
                return "wait" if running else "done"
            known = {x._trial_id for x in trials if x.params}  # points the sampler can see
            # Ask without distributions so the trial is leased *before* the sampler runs
            # (a GP fit can take seconds; an unleased RUNNING trial looks abandoned).
            trial = self.study.ask()
            held = lease_mod.Lease(self.storage, trial._trial_id,
                                   interval_s=t.heartbeat_s).start()
            try:
                for name, dist in self._dists.items():
                    _suggest(trial, name, dist)
            except UpdateFinishedTrialError:
                held.stop()  # reaped by another runner while sampling; its retry is queued
                return "again"
            except BaseException:
                held.stop()  # the trial stays RUNNING unleased: reaped, without using a retry
                raise
            reason = budget.never_run_reason(self.storage.get_trial(trial._trial_id),
                                             self.study.get_trials(deepcopy=False),
                                             n_trials=self.n_trials, known=known)
            if reason is not None:
                held.stop()
                trial.set_user_attr(*reason)
                self.study.tell(trial, state=TrialState.PRUNED)
                return "again"
            self.storage.set_trial_system_attr(trial._trial_id, budget.CLEARED, True)
            cancel = threading.Event()
            if self._halt.is_set():  # halted while the sampler ran: re-queue, don't run
                cancel.set()
            self._running[trial.number] = cancel
            return trial, held

    # ------------------------------------------------------------- running --

    def _execute(self, trial: Trial, held: lease_mod.Lease, backend: TrialBackend) -> None:
        cancel = self._running[trial.number]
        timed_out = threading.Event()

        def on_timeout() -> None:
            timed_out.set()
            cancel.set()

        timer = threading.Timer(_timer_seconds(self.cfg.trainer.timeout_s), on_timeout)
        timer.daemon = True
        params = {**self._base, **trial.params}
        started = time.monotonic()
        result: BackendResult | None = None
        error: BaseException | None = None
        timer.start()
        try:
            precision.check_before(self.study, params, backend)  # no study mixes dtypes
            ran = backend.run(params, on_round=lambda r, v: self._report(trial, r, v),
                              cancel=cancel)
            precision.pin_after(self.study, ran.record, backend)
            result = ran
        except Exception as exc:  # noqa: BLE001 - any trainer failure fails (and retries) the trial
            error = exc
        finally:
            timer.cancel()
        seconds = time.monotonic() - started
        try:  # the lease holds the trial until it is told, however long the storage takes
            with self._lock:
                self._running.pop(trial.number, None)
                if result is not None:
                    self._tell_success(trial, result, backend, seconds)
                else:
                    assert error is not None
                    self._tell_failure(trial, error, timed_out=timed_out.is_set())
        finally:
            held.stop()
        if isinstance(error, ConfigError):
            raise error  # a bad configuration fails every trial: stop, don't burn retries

    def _report(self, trial: Trial, step: int, value: float) -> None:
        """An intermediate value; the storage refusing it must not fail the trial itself."""
        try:
            trial.report(value, step)
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            log.warning("trial %d: round %d not stored (%s)", trial.number, step,
                        storage_error(exc).cause)

    def _tell_success(self, trial: Trial, result: BackendResult, backend: TrialBackend,
                      seconds: float) -> None:
        # Few writes, not one per field: every attribute write is a committed transaction.
        attrs: dict[str, Any] = {
            "stderr": result.stderr,
            # Per-problem counts feed the study's noise model (optimizer.science.noise).
            "result": {"n": result.n, "k": result.k, "n_problems": len(result.problems),
                       "problems_head": list(result.problems[:3]),
                       "correct": list(result.correct),
                       "backend": backend.name, "seconds": round(seconds, 3)}}
        if result.heterogeneity is not None:
            # The split's h, for the surrogate shared across distributions (study.shared).
            attrs[HETEROGENEITY_ATTR] = result.heterogeneity
        if result.record:
            # The full run record (every parameter, per-round metrics, timings, versions)
            # lives with the result, so a study database alone reproduces each trial.
            attrs["record"] = json.loads(json.dumps(result.record, default=str))
        frozen = self._results.store(trial, attrs, result.pass_at_k)
        if frozen.state != TrialState.COMPLETE:
            log.warning("trial %d was reaped while running; its retry will run", trial.number)
            return
        log.debug("trial %d: pass@k=%.3f +/- %.3f %s", trial.number, result.pass_at_k,
                 result.stderr, dict(trial.params))
        if self._on_complete is not None:
            self._on_complete(frozen)
        self._check_stop_rule()

    def _tell_failure(self, trial: Trial, error: BaseException, *, timed_out: bool) -> None:
        interrupted = isinstance(error, TrialCancelledError) and not timed_out
        # Neither a cancel, a study misconfiguration nor a trial the trainer never started
        # says anything against these parameters.
        free = interrupted or isinstance(error, (ConfigError, TrialNotStartedError))
        reason = "timed out" if timed_out else f"{type(error).__name__}: {error}"
        if interrupted:
            reason = "interrupted"
        log.warning("trial %d failed (%s)", trial.number, reason)
        frozen = self.storage.get_trial(trial._trial_id)
        lease_mod.fail_and_requeue(self.study, frozen, consume_retry=not free,
                                   max_retries=self.cfg.trainer.max_retries, storage=self.storage,
                                   user_attrs={"fail_reason": reason[:500]})

    # ------------------------------------------------------------ stopping --

    def _check_stop_rule(self) -> None:
        rule = self.cfg.stop
        trials = self.study.get_trials(deepcopy=False)
        if not rule.enabled or len(observations(trials)) < rule.min_trials:
            return
        ans, _ = distribution_answer(self.cfg, self.storage, self.dist, trials, regions=False,
                                     stop={"min_trials": rule.min_trials,
                                           "epsilon": rule.epsilon,
                                           "probability": rule.probability})
        if ans.stop is not None and ans.stop.stop:
            log.info("%s: stop rule met: %s", self.study.study_name, ans.stop.reason)
            self.study.set_user_attr(STOPPED_ATTR, ans.stop.reason)

    def _outcome(self) -> RunOutcome:
        trials = self.study.get_trials(deepcopy=False)
        ended = "halted" if self._halt.is_set() else (
            "stop rule" if STOPPED_ATTR in self.study.user_attrs else "budget")
        return RunOutcome(
            study_name=self.study.study_name, label=self.dist.label,
            n_complete=sum(1 for t in trials if t.state == TrialState.COMPLETE),
            n_failed=sum(1 for t in trials if t.state == TrialState.FAIL), ended=ended)


def trial_summary(trials: Sequence[FrozenTrial]) -> Mapping[str, int]:
    """Counts per state (for status displays)."""
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def study_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False)
