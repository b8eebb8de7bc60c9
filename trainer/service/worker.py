"""A worker's trial bookkeeping: capacity, running trials, cancellation, draining.

Transport-free (the gRPC servicer is a thin layer over it). Each accepted trial
runs the trial function on its own thread; events flow to the caller through a
queue, because a gRPC response stream can only be fed by the handler thread's
generator. A slot is held for exactly as long as the trial function runs, so a
worker is never double-booked, even while a cancelled trial winds down.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.contract import EvalProgressEvent, RoundEvent, TrialFunction, TrialResult, TrialSpec
from trainer.errors import CapacityError, ConfigError
from trainer.service import access
from trainer.service.status import DuplicateTrialError, WorkerUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class WorkerPolicy:
    """What this worker accepts beyond TrialSpec's own validation."""

    min_scaling_factor: float = field(default=0.1, metadata={"help": "smallest s accepted (inclusive)"})
    max_scaling_factor: float = field(default=5.0, metadata={"help": "largest s accepted (inclusive)"})
    allowed_models: tuple[str, ...] = field(
        default=(), metadata={"help": "model names this worker runs; empty: the presets"})
    model_roots: tuple[Path, ...] = field(
        default=(), metadata={"help": "directories whose model directories it also runs"})
    allowed_corpora: tuple[str, ...] = field(
        default=(), metadata={"help": "corpus sources it reads besides stdlib (e.g. hf:ID)"})
    corpus_roots: tuple[Path, ...] = field(
        default=(), metadata={"help": "directories whose source trees and data files it reads"})
    default_model: str | None = field(default=None, metadata={"help": "model when a request has none"})
    default_problems: str | None = field(
        default=None, metadata={"help": "HumanEval subset when a request has none"})

    def __post_init__(self) -> None:
        # Resolved once, so that later checks compare real paths with real paths.
        for name in ("model_roots", "corpus_roots"):
            roots = tuple(access.resolve_root(r, field=name) for r in getattr(self, name))
            object.__setattr__(self, name, roots)
        if not 0 < self.min_scaling_factor <= self.max_scaling_factor:
            raise ConfigError("min_scaling_factor",
                              f"range [{self.min_scaling_factor}, {self.max_scaling_factor}] is empty",
                              accepted="0 < min_scaling_factor <= max_scaling_factor")
        if self.default_model:
            try:
                access.check_model(self.default_model, allowed=self.allowed_models,
                                   roots=self.model_roots)
            except ConfigError as exc:
                raise ConfigError("default_model", exc.message, accepted=exc.accepted) from None

    def defaults(self) -> dict[str, Any]:
        """Values for fields a request leaves unset (before TrialSpec's own defaults)."""
        out: dict[str, Any] = {}
        if self.default_model:
            out["model"] = self.default_model
        elif self.allowed_models:
            out["model"] = self.allowed_models[0]
        if self.default_problems:
            out["problems"] = self.default_problems
        return out

    def check(self, spec: TrialSpec) -> None:
        """Raise ConfigError if ``spec`` is outside this worker's policy."""
        s = spec.scaling_factor
        if not self.min_scaling_factor <= s <= self.max_scaling_factor:
            raise ConfigError("scaling_factor", f"{s} is outside this worker's range",
                              accepted=f"[{self.min_scaling_factor}, {self.max_scaling_factor}]")
        access.check_model(spec.model, allowed=self.allowed_models, roots=self.model_roots)
        access.check_corpus(spec.corpus, allowed=self.allowed_corpora, roots=self.corpus_roots)


@dataclass(frozen=True, kw_only=True)
class TrialAccepted:
    """First event of every trial: the worker took it."""

    trial_id: str
    worker: str
    spec: TrialSpec


@dataclass(frozen=True, kw_only=True)
class WorkerInfo:
    """What GetInfo reports."""

    version: str
    worker: str
    model: str
    default_problems: str
    budget_profile: str
    capacity: int
    busy: int
    idle: int
    min_scaling_factor: float
    max_scaling_factor: float
    allowed_models: tuple[str, ...]
    running_trials: tuple[str, ...]
    draining: bool
    devices: tuple[str, ...] = ("cpu",)
    auto_dtype: str = "float32"


@dataclass(frozen=True)
class _Done:
    result: TrialResult | None = None
    error: BaseException | None = None


class TrialRun:
    """One accepted trial: its thread, its cancel flag and its event queue."""

    def __init__(self, *, trial_id: str, spec: TrialSpec) -> None:
        self.trial_id = trial_id
        self.spec = spec
        self.cancel_event = threading.Event()
        self.cancel_reason = ""
        self.started = time.monotonic()
        self._queue: queue.SimpleQueue[RoundEvent | EvalProgressEvent | _Done] = queue.SimpleQueue()

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the trial to stop (idempotent; the first reason is kept)."""
        if not self.cancel_event.is_set():
            self.cancel_reason = reason
            self.cancel_event.set()

    def _emit(self, event: RoundEvent | EvalProgressEvent) -> None:
        self._queue.put(event)

    def events(self) -> Iterator[RoundEvent | EvalProgressEvent | TrialResult]:
        """Progress events, then the result; re-raises what the trial function raised."""
        while True:
            item = self._queue.get()
            if not isinstance(item, _Done):
                yield item
                continue
            if item.error is not None:
                raise item.error
            assert item.result is not None
            yield item.result
            return


class TrialRunner:
    """Admits trials up to ``capacity`` (no queueing), runs and cancels them.

    With ``devices`` (for example ``("cuda:0", "cuda:1")``) each device is one trial
    slot: the capacity is their number, and a trial whose ``device`` is ``auto`` runs
    on a free one (a trial naming one of them waits for no other). The spec a trial
    runs with, and the one its ``accepted`` event echoes, names the device it got.
    """

    def __init__(self, *, trial_fn: TrialFunction, capacity: int = 1,
                 devices: Sequence[str] = ()) -> None:
        if devices:
            capacity = len(devices)
        if capacity < 1:
            raise ConfigError("capacity", f"must be >= 1, got {capacity}", accepted=">= 1")
        self.trial_fn = trial_fn
        self.capacity = capacity
        self.devices = tuple(devices)
        self._device_of: dict[str, str] = {}  # trial id -> its device slot
        self._running: dict[str, TrialRun] = {}
        self._draining = False
        self._cond = threading.Condition()

    @property
    def draining(self) -> bool:
        return self._draining

    def running_ids(self) -> tuple[str, ...]:
        with self._cond:
            return tuple(self._running)

    def _free_device(self, wanted: str) -> str:
        """A free device slot for a trial asking for ``wanted`` (one of the devices, or
        auto); call with the lock held."""
        used = Counter(self._device_of.values())
        for device in dict.fromkeys(self.devices):  # a device listed twice is two slots
            if wanted in ("auto", device) and used[device] < self.devices.count(device):
                return device
        raise CapacityError(f"device {wanted} is busy (running: {', '.join(self._running)}); "
                            "retry later, or ask for device auto")

    def start(self, trial_id: str, spec: TrialSpec) -> TrialRun:
        """Take a slot and start the trial, or raise at once (draining, duplicate, full)."""
        if self.devices and spec.device != "auto" and spec.device not in self.devices:
            raise ConfigError("device", f"{spec.device} is not served by this worker",
                              accepted="auto, " + ", ".join(dict.fromkeys(self.devices)))
        with self._cond:
            if self._draining:
                raise WorkerUnavailableError("worker is draining (shutting down); try another worker")
            if trial_id in self._running:
                raise DuplicateTrialError(f"trial {trial_id!r} is already running on this worker")
            if len(self._running) >= self.capacity:
                raise CapacityError(
                    f"worker is busy: {len(self._running)} of {self.capacity} trial slot(s) in use "
                    f"(running: {', '.join(self._running)}); retry later or use another worker")
            if self.devices:
                spec = spec.replace(device=self._free_device(spec.device))
                self._device_of[trial_id] = spec.device
            run = TrialRun(trial_id=trial_id, spec=spec)
            self._running[trial_id] = run
        thread = threading.Thread(target=self._run, args=(run,), name=f"trial-{trial_id}",
                                  daemon=True)
        thread.start()
        return run

    def _run(self, run: TrialRun) -> None:
        done: _Done
        try:
            result = self.trial_fn(run.spec, on_event=run._emit, cancel=run.cancel_event)
            if not isinstance(result, TrialResult):
                raise TypeError(f"trial function returned {type(result).__name__}, not TrialResult")
            done = _Done(result=result)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, which maps it to a status
            done = _Done(error=exc)
        # Free the slot before the caller learns the outcome: once a client sees
        # the end of its trial, the worker already accepts the next one.
        with self._cond:
            self._running.pop(run.trial_id, None)
            self._device_of.pop(run.trial_id, None)
            self._cond.notify_all()
        log.info("trial %s finished in %.2f s (%s)", run.trial_id, time.monotonic() - run.started,
                 "ok" if done.error is None else type(done.error).__name__)
        run._queue.put(done)

    def cancel(self, trial_id: str, reason: str = "cancelled by CancelTrial") -> bool:
        """Tell a running trial to stop; False if no such trial is running."""
        with self._cond:
            run = self._running.get(trial_id)
        if run is None:
            return False
        run.cancel(reason)
        return True

    def drain(self) -> None:
        """Accept no new trials from now on."""
        with self._cond:
            self._draining = True

    def cancel_all(self, reason: str) -> None:
        with self._cond:
            runs = list(self._running.values())
        for run in runs:
            run.cancel(reason)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no trial runs; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._running, timeout=timeout)
