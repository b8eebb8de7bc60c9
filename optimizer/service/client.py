"""Python client of the optimizer service; failed calls raise scalefed exceptions.

    with OptimizerClient("127.0.0.1:50061", token=...) as client:
        client.start_study(study_file="studies/quickstart.toml")
        best = client.get_best("quickstart", "iid")
        answer = optimizer.service.convert.answer_from_proto(best)   # the domain Answer

Status codes become the exceptions ``trainer.service.status`` maps them to, refined by
the optimizer's own: NOT_FOUND is ``StudyNotFoundError``, FAILED_PRECONDITION is
``StudyRunningError``, INVALID_ARGUMENT a ``ConfigError`` naming the field.
Only reads and StopStudy (idempotent) are retried, on UNAVAILABLE.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from optimizer.service.api import optimizer_pb2 as pb
from optimizer.service.api import optimizer_pb2_grpc
from optimizer.service.errors import StudyNotFoundError, StudyRunningError
from trainer.service.rpc import ServiceClient
from trainer.service.status import TrainerRpcError, exception_from_rpc_error

T = TypeVar("T")
_OPTIMIZER_CODES: dict[grpc.StatusCode, type[TrainerRpcError]] = {
    cls.default_code: cls for cls in (StudyNotFoundError, StudyRunningError)
}


def optimizer_exception(error: grpc.RpcError) -> Exception:
    """The exception for a failed optimizer call (trainer.service.status's, refined per code)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    if code in _OPTIMIZER_CODES:
        return _OPTIMIZER_CODES[code](error.details() or code.name)
    return exception_from_rpc_error(error)


class OptimizerClient(ServiceClient):
    """A connection to one optimizer service."""

    def __init__(self, target: str, *, token: str | None = None, tls: bool = False,
                 root_certificates: bytes | None = None, call_timeout: float = 60.0,
                 retries: int = 3, retry_backoff: float = 0.2) -> None:
        """``target`` is host:port; ``call_timeout`` bounds every call (GetBest fits a GP)."""
        super().__init__(target, token=token, tls=tls, root_certificates=root_certificates,
                         call_timeout=call_timeout, retries=retries, retry_backoff=retry_backoff)
        self._stub = optimizer_pb2_grpc.OptimizerServiceStub(self._channel)

    def _error(self, exc: grpc.RpcError) -> Exception:
        return optimizer_exception(exc)

    def _call(self, method: Callable[..., T], request: Any, *, retry: bool) -> T:
        return self._retrying(
            lambda: method(request, timeout=self.call_timeout, metadata=self._metadata),
            retry=retry)

    def start_study(self, *, study_file: str | None = None, study_toml: str | None = None,
                    storage: str | None = None, n_trials: int | None = None) -> pb.Study:
        """Start a study from a file on the server or from TOML text."""
        request = pb.StartStudyRequest(overrides=pb.StudyOverrides(storage=storage,
                                                                   n_trials=n_trials))
        _set_source(request, study_file=study_file, study_toml=study_toml)
        return self._call(self._stub.StartStudy, request, retry=False)

    def resume_study(self, study: str | None = None, *, study_file: str | None = None,
                     study_toml: str | None = None, storage: str | None = None,
                     n_trials: int | None = None) -> pb.Study:
        """Resume a stored study by name (known to the server), file or TOML text."""
        request = pb.ResumeStudyRequest(overrides=pb.StudyOverrides(storage=storage,
                                                                    n_trials=n_trials))
        if study is not None:
            request.study = study
        _set_source(request, study_file=study_file, study_toml=study_toml)
        return self._call(self._stub.ResumeStudy, request, retry=False)

    def stop_study(self, study: str, *, wait: bool = True) -> pb.Study:
        return self._call(self._stub.StopStudy, pb.StopStudyRequest(study=study, wait=wait),
                          retry=True)

    def list_studies(self) -> list[pb.Study]:
        return list(self._call(self._stub.ListStudies, pb.ListStudiesRequest(), retry=True).studies)

    def get_study(self, study: str, *, include_trials: bool = False) -> pb.Study:
        return self._call(self._stub.GetStudy,
                          pb.GetStudyRequest(study=study, include_trials=include_trials), retry=True)

    def get_best(self, study: str, distribution: str) -> pb.BestAnswer:
        """The answer for one distribution (``optimizer.service.convert.answer_from_proto`` for the domain
        Answer)."""
        return self._call(self._stub.GetBest,
                          pb.GetBestRequest(study=study, distribution=distribution), retry=True)

    def wait(self, study: str, *, timeout: float = 60.0, poll_s: float = 0.2) -> pb.Study:
        """Poll GetStudy until the study is no longer running (TimeoutError after ``timeout``)."""
        end = time.monotonic() + timeout
        while True:
            reply = self.get_study(study)
            if not reply.running:
                return reply
            if time.monotonic() > end:
                raise TimeoutError(f"study {study!r} still running after {timeout:g} s")
            time.sleep(poll_s)


def _set_source(request: Any, *, study_file: str | None, study_toml: str | None) -> None:
    if study_file is not None:
        request.study_file = study_file
    if study_toml is not None:
        request.study_toml = study_toml
