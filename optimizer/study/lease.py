"""Trial leases for ask/tell: heartbeats, stale-trial reaping, and exactly-once re-queueing.

Optuna's own heartbeat only covers ``Study.optimize``, so ask/tell runners keep a
lease in two trial system attributes: the owner (host, pid, process start time)
and the wall-clock time of the last renewal. A RUNNING trial is stale when its
lease is older than ``lease_s`` or, on the same host, its owner process is gone
(so a ``kill -9`` followed by an immediate resume needs no waiting).

Re-queueing is exactly-once: a retry is an enqueued WAITING trial carrying the
user attribute ``requeued_from = <failed trial number>``; it is created only if
none exists yet and *before* the failed trial is marked FAIL, and marking FAIL
is the storage's atomic compare-and-set (only one process wins). A crash between
the two steps leaves a RUNNING trial that is reaped later without a second copy.
Machines sharing a study need synchronised clocks (NTP); ``lease_s`` absorbs skew.

A reaped trial lost its *runner* (killed, crashed, its machine gone), which says
nothing about its parameters, so its retry keeps the attempt count: only a failed
trial run consumes a retry. The retry counts the runners lost instead
(``lost_runners``), and a parameter set whose runners keep dying - an in-process
trial that runs the runner out of memory - is given up after ``MAX_LOST_RUNNERS``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from optimizer.study.faults import describe, is_storage_error

log = logging.getLogger(__name__)

OWNER_KEY = "scalefed:owner"
LEASE_KEY = "scalefed:lease"
RETRY_OF = "retry_of"  # number of the first attempt of this parameter set
ATTEMPT = "attempt"  # 1 for the first attempt; a consumed retry adds one
REQUEUED_FROM = "requeued_from"  # the failed trial this one replaces
LOST_RUNNERS = "lost_runners"  # runners that died holding this parameter set
MAX_LOST_RUNNERS = 25


def _proc_start(pid: int) -> str:
    """Process start time in clock ticks (guards against pid reuse); '' off Linux."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def this_owner() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}|{pid}|{_proc_start(pid)}"


def owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this host; None when it cannot be known (another host)."""
    try:
        host, pid_text, start = owner.split("|")
        pid = int(pid_text)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not start or _proc_start(pid) in ("", start)


class Lease:
    """Holds a trial's lease: writes it at once, then renews it every ``interval_s``."""

    def __init__(self, storage: BaseStorage, trial_id: int, *, interval_s: float) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{trial_id}", daemon=True)

    def start(self) -> Lease:
        self._storage.set_trial_system_attr(self._trial_id, OWNER_KEY, this_owner())
        self._renew()
        self._thread.start()
        return self

    def _renew(self) -> None:
        self._storage.set_trial_system_attr(self._trial_id, LEASE_KEY, time.time())

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._renew()
            except UpdateFinishedTrialError:
                return
            except Exception as exc:  # a transient DB error must not kill the lease thread
                if is_storage_error(exc):  # one line per heartbeat, not a traceback
                    log.warning("lease renewal of trial %d failed: %s", self._trial_id,
                                describe(exc)[1])
                else:
                    log.warning("lease renewal of trial %d failed", self._trial_id,
                                exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def is_stale(trial: FrozenTrial, *, lease_s: float, now: float | None = None) -> bool:
    """Whether a RUNNING trial has lost its runner."""
    if trial.state != TrialState.RUNNING:
        return False
    owner = trial.system_attrs.get(OWNER_KEY)
    if isinstance(owner, str) and owner_alive(owner) is False:
        return True
    stamp = trial.system_attrs.get(LEASE_KEY)
    if not isinstance(stamp, (int, float)):
        start = trial.datetime_start
        stamp = start.timestamp() if start is not None else None
    now = time.time() if now is None else now
    return stamp is not None and now - float(stamp) > lease_s


def retry_attrs(trial: FrozenTrial, *, consume_retry: bool,
                lost_runner: bool = False) -> dict[str, Any]:
    attempt = int(trial.user_attrs.get(ATTEMPT, 1))
    attrs: dict[str, Any] = {
        RETRY_OF: int(trial.user_attrs.get(RETRY_OF, trial.number)),
        ATTEMPT: attempt + 1 if consume_retry else attempt,
        REQUEUED_FROM: trial.number,
    }
    lost = int(trial.user_attrs.get(LOST_RUNNERS, 0)) + int(lost_runner)
    if lost:
        attrs[LOST_RUNNERS] = lost
    return attrs


def requeue_once(study: optuna.Study, trial: FrozenTrial, *, consume_retry: bool,
                 max_retries: int, lost_runner: bool = False) -> bool:
    """Enqueue a retry of ``trial`` unless one exists or its retries are used up."""
    attrs = retry_attrs(trial, consume_retry=consume_retry, lost_runner=lost_runner)
    if consume_retry and attrs[ATTEMPT] > max_retries + 1:
        log.warning("trial %d: retries exhausted (%d attempts)", trial.number, attrs[ATTEMPT] - 1)
        return False
    if attrs.get(LOST_RUNNERS, 0) > MAX_LOST_RUNNERS:
        log.warning("trial %d: %d runners died holding these parameters; giving them up",
                    trial.number, attrs[LOST_RUNNERS])
        return False
    for other in study.get_trials(deepcopy=False):
        if other.user_attrs.get(REQUEUED_FROM) == trial.number:
            return False
    study.enqueue_trial(dict(trial.params), user_attrs=attrs)
    return True


def fail_and_requeue(study: optuna.Study, trial: FrozenTrial, *, consume_retry: bool,
                     max_retries: int, storage: BaseStorage,
                     user_attrs: Mapping[str, Any] | None = None,
                     lost_runner: bool = False) -> bool:
    """Re-queue first, then mark FAIL (atomic). Returns whether this call failed the trial."""
    for key, value in (user_attrs or {}).items():
        try:
            storage.set_trial_user_attr(trial._trial_id, key, value)
        except UpdateFinishedTrialError:
            return False
    requeue_once(study, trial, consume_retry=consume_retry, max_retries=max_retries,
                 lost_runner=lost_runner)
    try:
        return storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False


def reap_stale(study: optuna.Study, storage: BaseStorage, *, lease_s: float,
               max_retries: int) -> list[int]:
    """Fail every stale RUNNING trial and re-queue its parameters. Returns their numbers.

    A lost runner is not the parameters' fault: the retry keeps the attempt count and
    counts the lost runner instead (see the module docstring).
    """
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_stale(trial, lease_s=lease_s):
            log.warning("trial %d: lease expired, failing and re-queueing it", trial.number)
            if fail_and_requeue(study, trial, consume_retry=False, max_retries=max_retries,
                                storage=storage, user_attrs={"fail_reason": "lease expired"},
                                lost_runner=True):
                reaped.append(trial.number)
    return reaped
