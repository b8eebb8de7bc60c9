"""Faults a study survives: storage failures, named, and trainers that are down.

SQLAlchemy and Optuna wrap the driver's error (``sqlite3`` or ``psycopg2``) in one
or two layers whose final message is misleading (Optuna's "An exception is raised
during the commit ... e.g. exceeding max length" for a full disk). ``storage_error``
walks the chain down to the driver's message and turns it into one line that names
the cause, so the CLI prints that line instead of a traceback.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from optuna.exceptions import StorageInternalError
from sqlalchemy.exc import SQLAlchemyError

from trainer.errors import ScalefedError

T = TypeVar("T")
log = logging.getLogger(__name__)

# (cause, what the operator should know), matched against the driver's message, first wins.
_CAUSES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("disk full", ("database or disk is full", "no space left", "disk full",
                   "could not extend file", "diskfull"),
     "the disk holding the database is full; free space, then resume"),
    ("read-only", ("readonly database", "read-only", "read only", "readonly"),
     "the database cannot be written (read-only file, directory or mount)"),
    ("corrupt", ("file is not a database", "malformed", "database corrupt", "not a database"),
     "the database file is corrupt or not a database (restore a copy, or use a new one)"),
    ("cannot open", ("unable to open database file",),
     "the database file cannot be opened (missing directory or no permission)"),
    ("locked", ("database is locked",),
     "another process holds the database lock for too long"),
    ("unreachable", ("could not connect", "connection refused", "server closed the connection",
                     "could not translate host name", "timeout expired", "connection to server"),
     "the database server cannot be reached"),
)


class StorageError(ScalefedError):
    """The study's storage failed; ``cause`` is one of the names in ``_CAUSES`` or 'failed'."""

    def __init__(self, message: str, *, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it wraps: ``orig`` (SQLAlchemy) and ``__cause__``.

    Not ``__context__``: an error raised while handling a storage error is not one.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        cur = todo.pop(0)
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        for nxt in (getattr(cur, "orig", None), cur.__cause__):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the database (not from a trial or the runner's own logic)."""
    return any(isinstance(e, (SQLAlchemyError, StorageInternalError, sqlite3.Error, StorageError))
               for e in _chain(exc))


def _innermost(exc: BaseException) -> BaseException:
    """The driver's error (``sqlite3``, ``psycopg2``) if there is one, else the last wrapped."""
    chain = list(_chain(exc))
    drivers = [e for e in chain if type(e).__module__.split(".")[0] in ("sqlite3", "psycopg2")]
    return drivers[0] if drivers else chain[-1]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines() or [""]
    return f"{type(exc).__name__}: {lines[0]}".rstrip(": ")


def _redact(url: str) -> str:
    if "@" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL we cannot parse is shown without its query
        return url.split("@")[-1]


def describe(exc: BaseException) -> tuple[str, str]:
    """(cause, ``cause: advice (driver message)``) for a database failure: one line."""
    inner = _innermost(exc)
    text = str(inner).lower()  # not SQLAlchemy's text: its SQL statement could match a needle
    for name, needles, advice in _CAUSES:
        if any(n in text for n in needles):
            return name, f"{name}: {advice} ({_first_line(inner)})"
    return "failed", f"failed: {_first_line(inner)}"


def storage_error(exc: BaseException, url: str = "") -> StorageError:
    """One-line ``StorageError`` for a database failure, naming its cause."""
    if isinstance(exc, StorageError):
        return exc
    cause, text = describe(exc)
    where = f"storage {_redact(url)}" if url else "storage"
    return StorageError(f"{where}: {text}", cause=cause)


class Backoff:
    """Exponential waits, cut short by ``stop``: 0.5 s, 1 s, 2 s ... up to ``max_s``."""

    def __init__(self, *, stop: threading.Event, first_s: float = 0.5, max_s: float = 10.0) -> None:
        self._stop = stop
        self._first = first_s
        self._max = max_s
        self.delay = first_s

    def wait(self) -> bool:
        """Sleep the current delay and double it; True when ``stop`` was set meanwhile."""
        stopped = self._stop.wait(self.delay)
        self.delay = min(self.delay * 2, self._max)
        return stopped

    def reset(self) -> None:
        self.delay = self._first


def retry_storage(write: Callable[[], T], *, patience_s: float, stop: threading.Event,
                  on_retry: Callable[[BaseException, float], None]) -> T:
    """Call ``write`` until it succeeds, retrying storage errors for up to ``patience_s``.

    A full disk or a database restarting often clears within seconds; a finished
    result is worth waiting for. Non-storage errors, an expired patience or ``stop``
    re-raise the last error.
    """
    deadline = time.monotonic() + patience_s
    backoff = Backoff(stop=stop, max_s=max(patience_s / 4, 0.5))
    while True:
        try:
            return write()
        except Exception as exc:
            if not is_storage_error(exc) or time.monotonic() + backoff.delay > deadline:
                raise
            on_retry(exc, backoff.delay)
            if backoff.wait():
                raise


class OutageWait:
    """Waits out a trial backend that cannot take a trial (``TrialBackend.unavailable``).

    ``ready()`` is True at once for a backend without ``unavailable`` or one that answers
    None; otherwise it waits one backoff step (logging the outage once) and says False.
    """

    def __init__(self, backend: object, *, stop: threading.Event, max_s: float = 10.0) -> None:
        self._probe: Callable[[], str | None] | None = getattr(backend, "unavailable", None)
        self._name = str(getattr(backend, "name", backend))
        self._backoff = Backoff(stop=stop, max_s=max_s)
        self._since: float | None = None

    def ready(self) -> bool:
        reason = self._probe() if self._probe is not None else None
        if reason is None:
            if self._since is not None:
                log.info("trainer %s is back after %.0f s", self._name,
                         time.monotonic() - self._since)
            self._since = None
            self._backoff.reset()
            return True
        if self._since is None:
            self._since = time.monotonic()
            log.warning("trainer %s is %s: waiting for it (no trial is sent, no retry used)",
                        self._name, reason)
        self._backoff.wait()
        return False
