"""The scalefed.v1.TrainerService servicer: proto in, domain call, proto out. No science here."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc

from trainer import __version__
from trainer.contract import TrialSpec
from trainer.devices import resolve_device, resolve_dtype
from trainer.errors import ConfigError, ScalefedError, TrialCancelledError
from trainer.service import convert, status
from trainer.service.api import trainer_pb2, trainer_pb2_grpc
from trainer.service.status import RemoteInternalError, TrialDeadlineExceededError
from trainer.service.worker import TrialAccepted, TrialRun, TrialRunner, WorkerInfo, WorkerPolicy

log = logging.getLogger(__name__)


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    """Validates requests, admits them through a TrialRunner, streams the events."""

    def __init__(self, *, runner: TrialRunner, policy: WorkerPolicy, worker: str,
                 budget_profile: str = "default") -> None:
        self.runner = runner
        self.policy = policy
        self.worker = worker
        self.budget_profile = budget_profile
        self._auto_device: str | None = None

    def _admit(self, request: trainer_pb2.TrialRequest) -> TrialRun:
        trial_id = convert.trial_id_from_request(request)
        if not request.HasField("spec"):
            raise ConfigError("spec", "is required",
                                      accepted="a TrialSpec with at least scaling_factor and "
                                               "participation")
        policy = self.policy
        required = {**convert.REQUIRED_FIELDS,
                    "scaling_factor": f"[{policy.min_scaling_factor}, {policy.max_scaling_factor}]"}
        spec = convert.spec_from_proto(request.spec, defaults=policy.defaults(), required=required)
        policy.check(spec)
        return self.runner.start(trial_id, spec)

    def RunTrial(self, request: trainer_pb2.TrialRequest,
                 context: grpc.ServicerContext) -> Iterator[trainer_pb2.TrialEvent]:
        try:
            run = self._admit(request)
        except Exception as exc:  # noqa: BLE001 - every failure must become a status, not UNKNOWN
            log.info("rejected trial request: %s", exc)
            status.abort(context, exc)
        # Fires when the RPC ends for any reason: client cancel, expired deadline,
        # lost connection, or normal completion (then it is a no-op).
        if not context.add_callback(lambda: run.cancel(_end_reason(context))):
            run.cancel("the call ended before the trial started")
        log.info("trial %s accepted: s=%g p=%g model=%s", run.trial_id, run.spec.scaling_factor,
                 run.spec.participation, run.spec.model)
        yield convert.event_to_proto(run.trial_id, TrialAccepted(
            trial_id=run.trial_id, worker=self.worker, spec=run.spec))
        try:
            for item in run.events():
                yield convert.event_to_proto(run.trial_id, item)
        except TrialCancelledError as exc:
            status.abort(context, _cancelled(run, exc))
        except ScalefedError as exc:  # expected failures (bad model, bad config): no traceback
            log.warning("trial %s failed: %s", run.trial_id, exc)
            status.abort(context, exc)
        except Exception as exc:  # a bug or a broken environment: INTERNAL, keep serving
            log.exception("trial %s failed", run.trial_id)
            status.abort(context, RemoteInternalError(
                f"trial {run.trial_id} failed: {type(exc).__name__}: {exc} "
                f"(traceback in the worker log of {self.worker})"))

    def CancelTrial(self, request: trainer_pb2.CancelTrialRequest,
                    context: grpc.ServicerContext) -> trainer_pb2.CancelTrialResponse:
        if not request.trial_id:
            status.abort(context, ConfigError("trial_id", "is required",
                                                      accepted="the id of a running trial"))
        cancelled = self.runner.cancel(request.trial_id)
        log.info("cancel %s: %s", request.trial_id, "signalled" if cancelled else "not running")
        return trainer_pb2.CancelTrialResponse(cancelled=cancelled)

    def GetInfo(self, request: trainer_pb2.GetInfoRequest,
                context: grpc.ServicerContext) -> trainer_pb2.WorkerInfo:
        return convert.info_to_proto(self.info())

    def info(self) -> WorkerInfo:
        defaults = TrialSpec(**self.policy.defaults())
        running = self.runner.running_ids()
        return WorkerInfo(
            version=__version__,
            worker=self.worker,
            model=defaults.model,
            default_problems=defaults.problems,
            budget_profile=self.budget_profile,
            capacity=self.runner.capacity,
            busy=len(running),
            idle=max(self.runner.capacity - len(running), 0),
            min_scaling_factor=self.policy.min_scaling_factor,
            max_scaling_factor=self.policy.max_scaling_factor,
            allowed_models=self.policy.allowed_models,
            running_trials=running,
            draining=self.runner.draining,
            devices=self._devices(),
            auto_dtype=resolve_dtype("auto", self._devices()[0]),
        )

    def _devices(self) -> tuple[str, ...]:
        """The worker's device slots, or the device ``auto`` resolves to when it has none."""
        if self.runner.devices:
            return self.runner.devices
        if self._auto_device is None:
            self._auto_device = resolve_device("auto")
        return (self._auto_device,)


def _end_reason(context: grpc.ServicerContext) -> str:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return "deadline exceeded"
    return "the client cancelled the call or disconnected"


def _cancelled(run: TrialRun, exc: TrialCancelledError) -> TrialCancelledError:
    reason = run.cancel_reason or str(exc) or "cancelled"
    cls = TrialDeadlineExceededError if reason == "deadline exceeded" else TrialCancelledError
    return cls(f"trial {run.trial_id} cancelled: {reason}")
