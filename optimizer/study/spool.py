"""A local journal of finished results the storage refused (full disk, read-only, gone).

When a finished trial's result cannot be written even after retrying, the runner
appends it here - one JSON line: study, trial id and number, value and result
attributes - and stops. The next runner of that study (``scalefed study resume``)
writes the kept results back *before* it reaps stale trials, so the trial that
finished becomes COMPLETE instead of being re-run. The file sits next to a SQLite
database (``<db>.results.jsonl``) and under ``$SCALEFED_CACHE/spool`` (default
``~/.cache/scalefed/spool``) for a server database. Writes and the replay hold an
advisory lock, so runners on one host never drop each other's entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from optimizer.study.faults import StorageError, is_storage_error, retry_storage, storage_error

log = logging.getLogger(__name__)


def spool_path(storage_url: str) -> Path:
    """Where results refused by ``storage_url`` are kept."""
    if storage_url.startswith("sqlite:///"):
        db = Path(storage_url[len("sqlite:///"):].split("?", 1)[0])
        return db.with_name(db.name + ".results.jsonl")
    cache = os.environ.get("SCALEFED_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "scalefed")
    digest = hashlib.sha256(storage_url.encode()).hexdigest()[:16]
    return Path(cache) / "spool" / f"{digest}.results.jsonl"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def keep(path: Path, entry: Mapping[str, Any]) -> None:
    """Append one result; fsync'd, because the process is about to stop."""
    line = json.dumps(entry, default=str) + "\n"
    with _locked(path), open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def write_result(storage: BaseStorage, trial_id: int, attrs: Mapping[str, Any],
                 value: float) -> TrialState:
    """Store a finished result: its attributes, then COMPLETE (the storage's compare-and-set).

    Returns the trial's final state: COMPLETE, or what it already was when another
    runner finished it first (FAIL after a reap).
    """
    try:
        for key, val in attrs.items():
            storage.set_trial_user_attr(trial_id, key, val)
        storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [value])
    except UpdateFinishedTrialError:
        pass
    return storage.get_trial(trial_id).state


def restore(path: Path, study: optuna.Study, storage: BaseStorage) -> list[int]:
    """Write back the kept results of ``study``; returns the numbers of the trials restored.

    Entries of other studies stay in the file. A trial already finished (completed by
    another runner, or failed and re-queued by one) drops its entry: its parameter set
    is not lost, its retry runs. A storage error leaves the file as it was.
    """
    if not path.exists():
        return []
    restored: list[int] = []
    with _locked(path):
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        left: list[str] = []
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: skipping a damaged line", path)
                continue
            if entry.get("study") != study.study_name:
                left.append(line)
                continue
            state = storage.get_trial(int(entry["trial_id"])).state
            if state == TrialState.RUNNING:
                state = write_result(storage, int(entry["trial_id"]), entry["attrs"],
                                     float(entry["value"]))
            if state == TrialState.COMPLETE:
                restored.append(int(entry["number"]))
            else:
                log.warning("trial %s was re-queued before its kept result could be restored; "
                            "its retry runs instead", entry["number"])
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(f"{ln}\n" for ln in left), encoding="utf-8")
        os.replace(tmp, path)
        if not left:
            path.unlink()
    if restored:
        log.info("restored the kept results of trials %s from %s", restored, path)
    return restored


class ResultKeeper:
    """Stores finished results: retries a failing storage, then keeps them in the spool."""

    def __init__(self, *, study: optuna.Study, storage: BaseStorage, storage_url: str,
                 patience_s: float, stop: threading.Event) -> None:
        self.path = spool_path(storage_url)
        self.kept: list[int] = []  # trials whose result is in the spool
        self._study, self._storage = study, storage
        self._patience_s, self._stop = patience_s, stop

    def store(self, trial: Trial, attrs: Mapping[str, Any], value: float) -> FrozenTrial:
        """Write the result and tell COMPLETE; the trial as stored (FAIL if reaped meanwhile).

        A storage error is retried for ``patience_s``; then the result is kept in the
        spool and the error re-raised.
        """
        def on_retry(exc: BaseException, delay: float) -> None:
            log.warning("trial %d finished but its result was not stored (%s); retrying in "
                        "%.1f s", trial.number, storage_error(exc).cause, delay)

        try:
            return retry_storage(lambda: self._write(trial, attrs, value),
                                 patience_s=self._patience_s, stop=self._stop,
                                 on_retry=on_retry)
        except Exception as exc:
            if is_storage_error(exc):
                self._keep(trial, attrs, value, exc)
            raise

    def _write(self, trial: Trial, attrs: Mapping[str, Any], value: float) -> FrozenTrial:
        try:
            for key, val in attrs.items():
                trial.set_user_attr(key, val)
            return self._study.tell(trial, value, skip_if_finished=True)
        except UpdateFinishedTrialError:
            return self._storage.get_trial(trial._trial_id)

    def _keep(self, trial: Trial, attrs: Mapping[str, Any], value: float,
              exc: BaseException) -> None:
        entry = {"study": self._study.study_name, "trial_id": trial._trial_id,
                 "number": trial.number, "params": dict(trial.params), "value": value,
                 "attrs": dict(attrs)}
        cause = storage_error(exc).cause
        try:
            keep(self.path, entry)
        except OSError as spool_exc:  # the spool's disk may be the full one: the log is left
            log.error("trial %d: result neither stored (%s) nor kept in %s (%s); here it is: %s",
                      trial.number, cause, self.path, spool_exc, json.dumps(entry, default=str))
            return
        self.kept.append(trial.number)
        log.error("trial %d: result not stored (%s); kept in %s", trial.number, cause, self.path)

    def explain(self, error: StorageError) -> StorageError:
        """``error``, saying where the results it refused are kept."""
        if not self.kept:
            return error
        return StorageError(f"{error}; the finished results of trials {sorted(self.kept)} are "
                            f"kept in {self.path} and `scalefed study resume` writes them back",
                            cause=error.cause)
