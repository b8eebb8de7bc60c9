"""Python client of a trainer worker; failed calls raise scalefed exceptions.

    with TrainerClient("127.0.0.1:50051", token=...) as client:
        info = client.get_info()
        result = client.run_trial(spec, on_event=print, timeout=3600)

``run_trial`` has the TrialFunction signature, so a remote worker can stand in
wherever a local trial function is expected.

Retries happen only where they cannot duplicate work: GetInfo and CancelTrial
(idempotent) on UNAVAILABLE, and RunTrial on UNAVAILABLE *before* the worker
accepted the trial (the same trial id is resent, so a worker that did start it
answers ALREADY_EXISTS instead of running it twice). Nothing else is retried:
a busy worker (CapacityError) is for the caller to route elsewhere.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any

import grpc

from trainer.contract import EvalProgressEvent, RoundEvent, TrialEvent, TrialResult, TrialSpec
from trainer.service import convert
from trainer.service.api import trainer_pb2, trainer_pb2_grpc
from trainer.service.rpc import ServiceClient
from trainer.service.status import RemoteInternalError, TrainerRpcError, exception_from_rpc_error
from trainer.service.worker import TrialAccepted, WorkerInfo

log = logging.getLogger(__name__)
_MAX_MESSAGE = 64 * 1024 * 1024


class TrainerClient(ServiceClient):
    """A connection to one trainer worker."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        retries: int = 3,
        retry_backoff: float = 0.2,
        call_timeout: float = 10.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """``target`` is host:port. ``tls`` (implied by ``root_certificates``) uses a
        secure channel; ``call_timeout`` bounds the short calls (info, cancel, health)."""
        super().__init__(target, token=token, tls=tls, root_certificates=root_certificates,
                         call_timeout=call_timeout, retries=retries, retry_backoff=retry_backoff,
                         options=[("grpc.max_receive_message_length", _MAX_MESSAGE), *options])
        self._stub = trainer_pb2_grpc.TrainerServiceStub(self._channel)

    def _error(self, exc: grpc.RpcError) -> Exception:
        error = exception_from_rpc_error(exc)
        if isinstance(error, TrainerRpcError):  # transport trouble: say which worker
            return type(error)(f"{self.target}: {error}", code=error.code)
        return error

    def get_info(self, *, timeout: float | None = None) -> WorkerInfo:
        """The worker's model, defaults, scaling-factor range, capacity and load."""
        reply = self._retrying(lambda: self._stub.GetInfo(
            trainer_pb2.GetInfoRequest(), timeout=timeout or self.call_timeout,
            metadata=self._metadata))
        return convert.info_from_proto(reply)

    def cancel_trial(self, trial_id: str, *, timeout: float | None = None) -> bool:
        """Ask the worker to stop ``trial_id``; False if it was not running there."""
        reply = self._retrying(lambda: self._stub.CancelTrial(
            trainer_pb2.CancelTrialRequest(trial_id=trial_id),
            timeout=timeout or self.call_timeout, metadata=self._metadata))
        return bool(reply.cancelled)

    # ------------------------------------------------------------- trials ----

    def stream_trial(
        self,
        spec: TrialSpec | Mapping[str, Any],
        *,
        trial_id: str | None = None,
        timeout: float | None = None,
    ) -> Iterator[TrialAccepted | RoundEvent | EvalProgressEvent | TrialResult]:
        """Run a trial and yield TrialAccepted, progress events, then the TrialResult.

        ``spec`` may be a partial mapping (the worker fills its defaults and
        validates). ``timeout`` is the whole trial's deadline in seconds; when it
        expires the worker stops the trial. Closing the iterator cancels the call.
        """
        return self._stream(spec, trial_id=trial_id, timeout=timeout, calls=[], cancel=None)

    def _stream(
        self,
        spec: TrialSpec | Mapping[str, Any],
        *,
        trial_id: str | None,
        timeout: float | None,
        calls: list[grpc.Call],
        cancel: threading.Event | None,
    ) -> Generator[TrialAccepted | RoundEvent | EvalProgressEvent | TrialResult, None, None]:
        # ``calls`` receives each attempt's call so another thread can cancel it.
        request = convert.trial_request(spec, trial_id=trial_id or uuid.uuid4().hex[:16])
        deadline = None if timeout is None else time.monotonic() + timeout
        for attempt in range(self.retries + 1):
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            call = self._stub.RunTrial(request, timeout=remaining, metadata=self._metadata)
            calls.append(call)
            if cancel is not None and cancel.is_set():
                call.cancel()  # set before this attempt began: the watcher missed it
            accepted = False
            try:
                for msg in call:
                    item = convert.event_from_proto(msg)
                    accepted = accepted or isinstance(item, TrialAccepted)
                    yield item
                return
            except grpc.RpcError as exc:
                retry = (not accepted and exc.code() == grpc.StatusCode.UNAVAILABLE
                         and attempt < self.retries)
                if not retry:
                    raise self._error(exc) from None
                log.info("%s unavailable before accepting trial %s; retrying", self.target,
                         request.trial_id)
                time.sleep(self.retry_backoff * 2**attempt)
            finally:
                call.cancel()  # no-op after a normal end; stops the trial if abandoned

    def run_trial(
        self,
        spec: TrialSpec | Mapping[str, Any],
        *,
        on_event: Callable[[TrialEvent], None] | None = None,
        cancel: threading.Event | None = None,
        trial_id: str | None = None,
        timeout: float | None = None,
    ) -> TrialResult:
        """Run a trial remotely and return its result (the TrialFunction signature).

        Setting ``cancel`` cancels the call, which stops the trial on the worker;
        this then raises TrialCancelledError, as a local trial function would.
        """
        calls: list[grpc.Call] = []
        items = self._stream(spec, trial_id=trial_id, timeout=timeout, calls=calls,
                             cancel=cancel)
        watcher = None
        if cancel is not None:
            watcher = _CancelWatcher(cancel, lambda: calls and calls[-1].cancel())
        try:
            for item in items:
                if isinstance(item, TrialResult):
                    return item
                if on_event is not None and isinstance(item, (RoundEvent, EvalProgressEvent)):
                    on_event(item)
        finally:
            if watcher is not None:
                watcher.stop()
            items.close()
        raise RemoteInternalError(f"{self.target} ended the trial stream without a result")


class _CancelWatcher:
    """Calls ``on_cancel`` from a helper thread once ``event`` is set."""

    def __init__(self, event: threading.Event, on_cancel: Callable[[], object]) -> None:
        self._event = event
        self._done = threading.Event()
        self._on_cancel = on_cancel
        self._thread = threading.Thread(target=self._watch, daemon=True, name="trial-cancel")
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.is_set():
            if self._event.wait(0.05):
                self._on_cancel()
                return

    def stop(self) -> None:
        self._done.set()
