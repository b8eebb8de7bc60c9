"""The scalefed.v1.OptimizerService servicer: proto in, StudyManager call, proto out. No science.

Every failure is raised as a domain error and becomes a status through
``trainer.service.status`` (the one mapping): a ConfigError is INVALID_ARGUMENT naming the
field, an unknown study NOT_FOUND, a study already running FAILED_PRECONDITION.
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
from optimizer.study import storage as store
from optimizer.study.manager import StudyManager, StudyStatus, study_status
from optimizer.study.studyfile import StudyConfig
from trainer.errors import ConfigError, ScalefedError
from trainer.service import status

log = logging.getLogger(__name__)
R = TypeVar("R")
_STUDY_ACCEPTED = "the name of a study this server knows (see ListStudies)"


def _rpc(method: Callable[..., R]) -> Callable[..., R]:
    """Turn any exception of ``method`` into the status trainer.service.status gives it."""

    @functools.wraps(method)
    def wrapper(self: OptimizerServicer, request: Any, context: grpc.ServicerContext) -> R:
        try:
            return method(self, request, context)
        except ScalefedError as exc:
            log.info("%s rejected: %s", method.__name__, exc)
            status.abort(context, exc)
        except Exception as exc:  # a bug must become INTERNAL, not UNKNOWN
            log.exception("%s failed", method.__name__)
            status.abort(context, exc)

    return wrapper


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
    """Maps each RPC onto one ``StudyManager`` call."""

    def __init__(self, *, manager: StudyManager) -> None:
        self.manager = manager
        # Study files seen here, so ResumeStudy can name a study instead of resending it.
        self._configs: dict[str, StudyConfig] = {}
        self._lock = threading.Lock()

    def register(self, cfg: StudyConfig) -> None:
        """Make a stored study queryable (GetBest, GetStudy) and resumable by name."""
        with self._lock:
            self._configs[cfg.name] = cfg
        self.manager.register(cfg)

    def _start(self, cfg: StudyConfig, *, resume: bool) -> pb.Study:
        if self._is_running(cfg.name):
            raise StudyRunningError(f"study {cfg.name!r} is already running; StopStudy first")
        if resume and not any(d.exists for d in study_status(cfg, with_answer=False).distributions):
            raise StudyNotFoundError(f"no study {cfg.name!r} stored in {cfg.storage_url}; "
                                     f"StartStudy starts one")
        with self._lock:
            self._configs[cfg.name] = cfg
        return self._study(self.manager.start(cfg, resume=resume))

    def _is_running(self, name: str) -> bool:
        try:
            return self.manager.get(name, with_answer=False).running
        except ConfigError as exc:
            if exc.field == "study":
                return False
            raise

    def _study(self, st: StudyStatus, *, with_trials: bool = False) -> pb.Study:
        trials = {d.label: stored_trials(st.storage, d.study_name)
                  for d in st.distributions if with_trials and d.exists}
        return convert.study_to_proto(st, error=self.manager.error(st.name), trials=trials)

    @_rpc
    def StartStudy(self, request: pb.StartStudyRequest, context: grpc.ServicerContext) -> pb.Study:
        return self._start(convert.study_config(request), resume=False)

    @_rpc
    def ResumeStudy(self, request: pb.ResumeStudyRequest,
                    context: grpc.ServicerContext) -> pb.Study:
        if request.WhichOneof("source") != "study":
            return self._start(convert.study_config(request), resume=True)
        with self._lock:
            cfg = self._configs.get(convert.required(request.study, "study", _STUDY_ACCEPTED))
        if cfg is None:
            raise StudyNotFoundError(f"unknown study {request.study!r}: send its study_file or "
                                     f"study_toml (known: {', '.join(sorted(self._configs)) or 'none'})")
        return self._start(convert.apply_overrides(cfg, request.overrides), resume=True)

    @_rpc
    def StopStudy(self, request: pb.StopStudyRequest, context: grpc.ServicerContext) -> pb.Study:
        name = convert.required(request.study, "study", _STUDY_ACCEPTED)
        with _known_study():
            return self._study(self.manager.stop(name, wait=request.wait))

    @_rpc
    def ListStudies(self, request: pb.ListStudiesRequest,
                    context: grpc.ServicerContext) -> pb.ListStudiesResponse:
        return pb.ListStudiesResponse(studies=[self._study(s) for s in self.manager.list()])

    @_rpc
    def GetStudy(self, request: pb.GetStudyRequest, context: grpc.ServicerContext) -> pb.Study:
        name = convert.required(request.study, "study", _STUDY_ACCEPTED)
        with _known_study():
            st = self.manager.get(name, with_answer=False)
        return self._study(st, with_trials=request.include_trials)

    @_rpc
    def GetBest(self, request: pb.GetBestRequest,
                context: grpc.ServicerContext) -> pb.BestAnswer:
        name = convert.required(request.study, "study", _STUDY_ACCEPTED)
        with _known_study():
            if not request.distribution:
                labels = [d.label for d in self.manager.get(name, with_answer=False).distributions]
                raise ConfigError("distribution", "is required", accepted=", ".join(labels))
            # An unknown label is the manager's ConfigError("distribution") listing the labels.
            return convert.best_to_proto(name, self.manager.best(name, request.distribution))
