"""The scalefed.v1.OptimizerService servicer: proto in, StudyManager call, proto out. No science.

Every failure is raised as a domain error and becomes a status through
``trainer.service.status`` (the one mapping): a ConfigError is INVALID_ARGUMENT naming the
field, an unknown study NOT_FOUND, a study already running FAILED_PRECONDITION.

Start and resume go through the operator's ``OperatorPolicy`` first, and a study is
registered only once it has started: a refused request leaves the server as it was.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
import optuna
from optuna.trial import FrozenTrial

from optimizer.service import convert
from optimizer.service.api import optimizer_pb2 as pb
from optimizer.service.api import optimizer_pb2_grpc
from optimizer.service.errors import StudyNotFoundError, StudyRunningError
from optimizer.service.policy import OperatorPolicy
from optimizer.study import storage as store
from optimizer.study.manager import StudyManager, StudyStatus, is_stored
from optimizer.study.storageurl import clip, redact
from optimizer.study.studyfile import StudyConfig
from trainer.errors import ConfigError, ScalefedError
from trainer.service import status

log = logging.getLogger(__name__)
R = TypeVar("R")
# Status details travel in a header (gRPC's limit is 8 KiB in all): never echo more.
_MAX_DETAILS = 2000


def _rpc(method: Callable[..., R]) -> Callable[..., R]:
    """Turn any exception of ``method`` into the status trainer.service.status gives it."""

    @functools.wraps(method)
    def wrapper(self: OptimizerServicer, request: Any, context: grpc.ServicerContext) -> R:
        try:
            return method(self, request, context)
        except ScalefedError as exc:
            log.info("%s rejected: %s", method.__name__, clip(str(exc), _MAX_DETAILS))
            status.abort(context, _bounded(exc))
        except Exception as exc:  # a bug must become INTERNAL, not UNKNOWN
            log.exception("%s failed", method.__name__)
            status.abort(context, _bounded(exc))

    return wrapper


def _bounded(exc: BaseException) -> BaseException:
    """``exc`` with its text clipped, so a huge request value cannot overflow the trailers."""
    if len(str(exc)) <= _MAX_DETAILS:
        return exc
    if isinstance(exc, ConfigError):
        message = str(exc).removeprefix(f"{exc.field}: ")
        if exc.accepted:
            message = message.removesuffix(f" (accepted: {exc.accepted})")
        return ConfigError(clip(exc.field, 200), clip(message, 800),
                           accepted=clip(exc.accepted, 800) if exc.accepted else None)
    try:
        return type(exc)(clip(str(exc), _MAX_DETAILS))
    except Exception:  # noqa: BLE001 - an exception type with another signature
        return RuntimeError(f"{type(exc).__name__}: {clip(str(exc), _MAX_DETAILS)}")


@contextmanager
def _known_study() -> Iterator[None]:
    """StudyManager reports an unknown name as ConfigError("study"): that is NOT_FOUND here."""
    try:
        yield
    except ConfigError as exc:
        if exc.field != "study":
            raise
        raise StudyNotFoundError(str(exc).removeprefix("study: ")) from None


def stored_trials(storage_url: str, study_name: str) -> list[FrozenTrial]:
    """Every trial of one stored Optuna study."""
    study = optuna.load_study(study_name=study_name, storage=store.open_storage(storage_url))
    return study.get_trials(deepcopy=False)


class OptimizerServicer(optimizer_pb2_grpc.OptimizerServiceServicer):
    """Maps each RPC onto one ``StudyManager`` call, inside the operator's ``policy``."""

    def __init__(self, *, manager: StudyManager, policy: OperatorPolicy | None = None,
                 backend: str = "grpc") -> None:
        self.manager = manager
        self.policy = policy or OperatorPolicy()
        self.backend = backend
        # One start at a time: the checks and the registration must not interleave.
        self._start_lock = threading.Lock()

    def register(self, cfg: StudyConfig) -> None:
        """Make a stored study queryable (GetBest, GetStudy) and resumable by name.

        Its storage must be one the policy allows; its endpoints are checked on resume."""
        self.manager.register(self.policy.admit_storage(cfg))

    def _start(self, cfg: StudyConfig, *, resume: bool) -> pb.Study:
        cfg = self.policy.admit(cfg, backend=self.backend)
        with self._start_lock:
            self.manager.check_identity(cfg)
            if self.manager.is_running(cfg.name):
                raise StudyRunningError(f"study {cfg.name!r} is already running; StopStudy first")
            if resume and not is_stored(cfg):
                raise StudyNotFoundError(f"no study {cfg.name!r} stored in "
                                         f"{redact(cfg.storage_url)}; StartStudy starts one")
            return self._study(self.manager.start(cfg, resume=resume))

    def _study(self, st: StudyStatus, *, with_trials: bool = False) -> pb.Study:
        trials = {d.label: stored_trials(st.storage, d.study_name)
                  for d in st.distributions if with_trials and d.exists}
        return convert.study_to_proto(st, error=self.manager.error(st.name), trials=trials)

    @_rpc
    def StartStudy(self, request: pb.StartStudyRequest, context: grpc.ServicerContext) -> pb.Study:
        return self._start(convert.study_config(request, self.policy), resume=False)

    @_rpc
    def ResumeStudy(self, request: pb.ResumeStudyRequest,
                    context: grpc.ServicerContext) -> pb.Study:
        if request.WhichOneof("source") != "study":
            return self._start(convert.study_config(request, self.policy), resume=True)
        name = convert.study_name(request.study)
        try:
            cfg = self.manager.config(name)
        except ConfigError:
            raise StudyNotFoundError(
                f"unknown study {clip(repr(name))}: send its study_file or study_toml "
                f"(known: {', '.join(self.manager.names()[:20]) or 'none'})") from None
        return self._start(convert.apply_overrides(cfg, request.overrides, self.policy),
                           resume=True)

    @_rpc
    def StopStudy(self, request: pb.StopStudyRequest, context: grpc.ServicerContext) -> pb.Study:
        name = convert.study_name(request.study)
        with _known_study():
            return self._study(self.manager.stop(name, wait=request.wait))

    @_rpc
    def ListStudies(self, request: pb.ListStudiesRequest,
                    context: grpc.ServicerContext) -> pb.ListStudiesResponse:
        return pb.ListStudiesResponse(studies=[self._listed(name)
                                               for name in self.manager.names()])

    def _listed(self, name: str) -> pb.Study:
        """One study's summary; a storage that fails now marks that study, not the list."""
        try:
            return self._study(self.manager.get(name, with_answer=False))
        except Exception as exc:  # noqa: BLE001 - storage drivers raise many types
            log.warning("study %s: %s", name, clip(str(exc)))
            cfg = self.manager.config(name)
            return pb.Study(name=name, storage=redact(cfg.storage_url), state=pb.Study.FAILED,
                            running=self.manager.is_running(name), error=clip(str(exc)))

    @_rpc
    def GetStudy(self, request: pb.GetStudyRequest, context: grpc.ServicerContext) -> pb.Study:
        name = convert.study_name(request.study)
        with _known_study():
            st = self.manager.get(name, with_answer=False)
        return self._study(st, with_trials=request.include_trials)

    @_rpc
    def GetBest(self, request: pb.GetBestRequest,
                context: grpc.ServicerContext) -> pb.BestAnswer:
        name = convert.study_name(request.study)
        with _known_study():
            if not request.distribution:
                labels = [d.label for d in self.manager.config(name).distributions]
                raise ConfigError("distribution", "is required", accepted=", ".join(labels))
            # An unknown label is the manager's ConfigError("distribution") listing the labels.
            return convert.best_to_proto(name, self.manager.best(
                name, convert.bounded(request.distribution, "distribution", 64)))
