"""Trial backends: where one trial actually runs.

The runner only knows the ``TrialBackend`` protocol: ``run(params, on_round=, cancel=)``
with ``params`` the full flat TrialSpec dict (profile, distribution, seeds and the
searched values). Three implementations:

* ``SyntheticBackend`` - the known-optimum landscape of ``optimizer.science.synthetic``;
* ``InProcessBackend`` - a ``trainer.contract.TrialFunction`` called in this process;
* ``GrpcBackend`` - a remote trainer service (adapter around ``trainer.service.client.TrainerClient``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from optimizer.science.synthetic import Landscape, noise_seed, optimum_at, simulate
from optimizer.study.endpoints import TrainerEndpoint
from optimizer.study.heterogeneity import heterogeneity_of_record, synthetic_partition
from trainer.contract import (
    RoundEvent,
    TrialEvent,
    TrialFunction,
    TrialResult,
    TrialSpec,
    load_trial_function,
    planned_rounds,
)
from trainer.errors import ConfigError, ScalefedError, TrialCancelledError

BACKEND_KINDS: tuple[str, ...] = ("synthetic", "inprocess", "grpc")
RoundCallback = Callable[[int, float], None]


class BackendError(ScalefedError):
    """The trainer died, was unreachable or returned garbage: the trial fails and is retried."""


class TrialNotStartedError(BackendError):
    """The trainer never started the trial (it stayed busy or went away before accepting it).

    The runner re-queues the trial without using one of its retries: nothing ran.
    """


@dataclass(frozen=True, kw_only=True)
class BackendResult:
    """What the optimizer needs from one finished trial."""

    pass_at_k: float
    stderr: float
    n: int
    problems: tuple[str, ...]
    k: int = 10
    correct: tuple[int, ...] = ()  # passing samples per problem, aligned with problems
    record: Mapping[str, Any] = field(default_factory=dict)
    # Mean TV distance of the trial's client split (optimizer.study.heterogeneity); None
    # when the trainer reported no partition.
    heterogeneity: float | None = None


class TrialBackend(Protocol):
    """Runs one trial; must poll ``cancel`` and raise TrialCancelledError when it is set.

    A backend that can be down (a remote worker) may also have ``unavailable() -> str |
    None``: the runner asks it before taking a trial and, while it answers a reason,
    waits with backoff instead of sending trials that would fail.
    """

    name: str

    def run(self, params: Mapping[str, Any], *, on_round: RoundCallback | None = None,
            cancel: threading.Event | None = None) -> BackendResult: ...


def problem_ids(problems: str) -> tuple[str, ...]:
    """HumanEval task ids of a subset spec (a count, ``all``, or ids), as the trainer reads it."""
    from trainer.evaluation.humaneval import select_problems

    return tuple(p["task_id"] for p in select_problems(problems))


class SyntheticBackend:
    """Known-optimum trainer with binomial evaluation noise. Thread-safe.

    Each trial's client split is a real partition of a fixed synthetic data set
    (``optimizer.study.heterogeneity.synthetic_partition``), and its heterogeneity ``h``
    places the true optimum (``optimum_at(h)``), so ``h`` reaches the optimizer as it
    does from a real trial. ``landscapes`` maps a distribution label (``iid``,
    ``dirichlet-0.1``...) to a surface of its own instead. ``delay_s`` sleeps per round (to test
    crashes mid-trial); ``fail_first`` makes the first N calls die like a lost trainer.
    """

    def __init__(self, *, name: str = "synthetic", landscapes: Mapping[str, Landscape] | None = None,
                 delay_s: float = 0.0, fail_first: int = 0, max_rounds: int = 8) -> None:
        self.name = name
        self._landscapes = dict(landscapes or {})
        self._delay_s = delay_s
        self._max_rounds = max_rounds
        self._fail_left = fail_first
        self._splits: dict[tuple[str, int, int], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def landscape(self, params: Mapping[str, Any]) -> tuple[Landscape, dict[str, Any]]:
        """The true surface for ``params`` and the record of the split it was placed by."""
        kind = str(params.get("distribution", "iid"))
        alpha = float(params["alpha"]) if kind == "dirichlet" else None
        label = f"dirichlet-{alpha:g}" if alpha is not None else kind
        key = (label, int(params.get("clients", 10)), int(params.get("partition_seed", 0)))
        if key not in self._splits:
            self._splits[key] = synthetic_partition(params).to_record()
        split = self._splits[key]
        if label not in self._landscapes:
            s, p = optimum_at(float(split["heterogeneity_mean_tv"]))
            return Landscape(optimum_s=s, optimum_p=p), split
        return self._landscapes[label], split

    def run(self, params: Mapping[str, Any], *, on_round: RoundCallback | None = None,
            cancel: threading.Event | None = None) -> BackendResult:
        with self._lock:
            land, split = self.landscape(params)
            die = self._fail_left > 0
            self._fail_left -= int(die)
        s, p = float(params["scaling_factor"]), float(params["participation"])
        ids = problem_ids(str(params.get("problems", "40")))
        n, k = int(params.get("samples", 10)), int(params.get("k", 10))
        seed = int(params.get("eval_seed", 0))
        rng = np.random.default_rng(noise_seed(seed, params))
        rounds = min(planned_rounds(TrialSpec.from_dict(params)), self._max_rounds)
        started = time.monotonic()
        for r in range(1, rounds + 1):
            if cancel is not None and cancel.wait(self._delay_s):
                raise TrialCancelledError("synthetic trial cancelled")
            if cancel is None and self._delay_s:
                time.sleep(self._delay_s)
            if die and r == (rounds + 1) // 2:
                raise BackendError(f"{self.name}: synthetic trainer died in round {r}")
            if on_round is not None:
                partial = dataclasses.replace(land, lift=land.lift * r / rounds)
                value, _, _ = simulate(partial, s, p, n=n, k=k, n_problems=len(ids),
                                       problem_seed=0, rng=rng, crn_seed=seed)
                on_round(r, value)
        value, se, correct = simulate(land, s, p, n=n, k=k, n_problems=len(ids),
                                      problem_seed=0, rng=rng, crn_seed=seed)
        record = {"backend": "synthetic", "rounds": rounds, "correct": correct,
                  "seconds": time.monotonic() - started,
                  "true_optimum": [land.optimum_s, land.optimum_p], "partition": split}
        return BackendResult(pass_at_k=value, stderr=se, n=n, problems=ids, k=k,
                             correct=tuple(correct), record=record,
                             heterogeneity=float(split["heterogeneity_mean_tv"]))


class InProcessBackend:
    """Calls a ``TrialFunction`` in this process (one trial at a time per instance)."""

    def __init__(self, fn: TrialFunction, *, name: str = "inprocess") -> None:
        self.name = name
        self._fn = fn

    def run(self, params: Mapping[str, Any], *, on_round: RoundCallback | None = None,
            cancel: threading.Event | None = None) -> BackendResult:
        spec = TrialSpec.from_dict(params)

        def on_event(event: TrialEvent) -> None:
            # Higher is better for every reported value: the trainer's intermediate score
            # if it computes one, else the negative training loss.
            if on_round is not None and isinstance(event, RoundEvent):
                value = event.intermediate if event.intermediate is not None else -event.train_loss
                on_round(event.round, float(value))

        result = self._fn(spec, on_event=on_event, cancel=cancel)
        return _result_of(result)

    def auto_dtype(self) -> str | None:
        """What ``dtype = "auto"`` resolves to here (this process runs the trials)."""
        from trainer.devices import resolve

        return resolve(device="auto", dtype="auto").dtype


# gRPC's own reconnect backoff grows to 120 s: after a long outage, calls would fail fast
# for up to two minutes after the worker is back. Keep it near the runner's probe backoff.
RECONNECT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 4000),
)


class GrpcBackend:
    """A remote trainer service at ``endpoint`` (one ``TrainerClient`` per endpoint).

    Errors become what the runner expects: a lost connection, an expired deadline or a
    worker that failed (INTERNAL) become ``BackendError`` (the trial fails and uses a
    retry); CANCELLED is ``TrialCancelledError``; INVALID_ARGUMENT, an unknown model or a
    refused token are ``ConfigError`` (the study's definition is wrong, so the run stops
    instead of burning retries). A worker that is down, draining or full is reported by
    ``unavailable()`` so the runner waits for it before sending a trial; a worker at
    capacity started nothing, so the trial is re-sent with backoff for up to
    ``busy_wait_s`` seconds, then handed back unstarted (``TrialNotStartedError``).
    """

    def __init__(self, endpoint: str, *, token: str | None = None, tls: bool = False,
                 root_certificates: bytes | None = None, timeout_s: float | None = None,
                 busy_wait_s: float = 120.0, retries: int = 3) -> None:
        import os

        from trainer.service.client import TrainerClient
        from trainer.service.rpc import TRAINER_TOKEN_ENV

        self.name = endpoint
        self._endpoint = endpoint
        self._timeout_s = timeout_s
        self._busy_wait_s = busy_wait_s
        # Without an explicit token, use the one `scalefed trainer serve` reads too.
        token = token if token is not None else (os.environ.get(TRAINER_TOKEN_ENV) or None)
        self._client = TrainerClient(endpoint, token=token, tls=tls,
                                     root_certificates=root_certificates, retries=retries,
                                     options=RECONNECT_OPTIONS)

    def unavailable(self) -> str | None:
        """Why the worker cannot take a trial now (down, draining, full), or None if it can.

        A refused token raises ``ConfigError``; any other trouble answers None, so that
        the trial itself reports it (and is retried as usual).
        """
        from trainer.service.status import TrialDeadlineExceededError, WorkerUnavailableError

        try:
            info = self._client.get_info()
        except (WorkerUnavailableError, TrialDeadlineExceededError) as exc:
            return f"unreachable ({exc})"
        except Exception as exc:  # mapped like a trial's error
            error = _backend_error(self.name, exc)
            if isinstance(error, ConfigError):
                raise error from exc
            return None
        if info.draining:
            return "draining"
        if info.busy >= info.capacity:
            return f"busy ({info.busy} of {info.capacity} trials)"
        return None

    def auto_dtype(self) -> str | None:
        """What ``dtype = "auto"`` resolves to on the worker (None if it cannot be asked)."""
        try:
            return self._client.get_info().auto_dtype or None
        except Exception:  # noqa: BLE001 - the trial itself will report an unreachable worker
            return None

    def run(self, params: Mapping[str, Any], *, on_round: RoundCallback | None = None,
            cancel: threading.Event | None = None) -> BackendResult:
        from trainer.errors import CapacityError

        spec = TrialSpec.from_dict(params)
        deadline = time.monotonic() + self._busy_wait_s
        delay = 0.5
        while True:
            try:
                result = self._client.run_trial(spec, on_event=_round_forwarder(on_round),
                                                cancel=cancel, timeout=self._timeout_s)
                break
            except CapacityError as exc:
                if time.monotonic() + delay > deadline:
                    raise TrialNotStartedError(f"{self.name}: still busy after "
                                               f"{self._busy_wait_s:g} s: {exc}") from exc
                if cancel is not None and cancel.wait(delay):
                    raise TrialCancelledError(f"{self.name}: cancelled while waiting") from exc
                if cancel is None:
                    time.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Exception as exc:  # every failure maps to one runner outcome
                raise _backend_error(self.name, exc) from exc
        return _result_of(result)

    def close(self) -> None:
        """Close the channel to the worker."""
        self._client.close()


def _result_of(result: TrialResult) -> BackendResult:
    """A real trial's result, with the heterogeneity of the split its record reports."""
    record = dict(result.record)
    return BackendResult(pass_at_k=result.pass_at_k, stderr=result.stderr, n=result.n,
                         problems=tuple(result.problems), k=result.k,
                         correct=tuple(result.correct), record=record,
                         heterogeneity=heterogeneity_of_record(record))


def _round_forwarder(on_round: RoundCallback | None) -> Callable[[TrialEvent], None] | None:
    """Report rounds as InProcessBackend does: the intermediate score, else -train_loss."""
    if on_round is None:
        return None
    callback = on_round

    def on_event(event: TrialEvent) -> None:
        if isinstance(event, RoundEvent):
            value = event.intermediate if event.intermediate is not None else -event.train_loss
            callback(event.round, float(value))

    return on_event


def _backend_error(endpoint: str, exc: BaseException) -> BaseException:
    """The runner-facing exception for a failed remote trial (see GrpcBackend)."""
    from trainer.errors import ModelNotFoundError
    from trainer.service.status import AuthenticationError, TrialDeadlineExceededError

    if isinstance(exc, ConfigError):
        message = str(exc).removeprefix(f"{exc.field}: ")
        if exc.accepted:
            message = message.removesuffix(f" (accepted: {exc.accepted})")
        return ConfigError(exc.field, f"rejected by {endpoint}: {message}", accepted=exc.accepted)
    if isinstance(exc, ModelNotFoundError):
        return ConfigError("profile.model", f"{endpoint}: {exc}",
                           accepted="a model the trainer worker can load")
    if isinstance(exc, AuthenticationError):
        return ConfigError("trainer.token", str(exc),
                           accepted="the worker's token in $SCALEFED_TRAINER_TOKEN")
    # A deadline is a failed attempt (retried), unlike a cancel, which the runner asked for.
    if isinstance(exc, TrialCancelledError) and not isinstance(exc, TrialDeadlineExceededError):
        return exc
    return BackendError(f"{endpoint}: {type(exc).__name__}: {exc}")


def make_backends(kind: str, *, endpoints: Sequence[TrainerEndpoint], workers: int,
                  function: str = "", synthetic: SyntheticBackend | None = None) -> list[TrialBackend]:
    """One backend per concurrent trial slot: per endpoint for gRPC, ``workers`` otherwise.

    ``endpoints`` and ``function`` must already be ones the operator allows (the server's
    ``OperatorPolicy`` resolves them); each endpoint's TLS settings and token go with it.
    """
    if kind == "synthetic":
        shared = synthetic or SyntheticBackend()
        return [shared] * max(workers, len(endpoints), 1)
    if kind == "inprocess":
        if not function:
            raise ConfigError("trainer.function", "is required for --backend inprocess",
                              accepted="module.path:callable returning a TrialResult")
        fn = load_trial_function(function, field="trainer.function")
        return [InProcessBackend(fn, name=f"inprocess-{i}") for i in range(workers)]
    if kind == "grpc":
        if not endpoints:
            raise ConfigError("trainer.endpoints", "is empty; --backend grpc needs at least one",
                              accepted='e.g. ["127.0.0.1:50051"]')
        return [GrpcBackend(e.address, token=e.token(), tls=e.tls,
                            root_certificates=e.root_certificates()) for e in endpoints]
    raise ConfigError("backend", f"unknown backend {kind!r}", accepted=", ".join(BACKEND_KINDS))
