"""Conversion between the scalefed.v1 protobuf messages and the domain types.

Mechanical on purpose: the proto ``TrialSpec`` mirrors ``trainer.contract.TrialSpec``
field for field (a test keeps them in step), so the service adds no science and
every validation message names the same field the user wrote.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

from trainer.contract import EvalProgressEvent, RoundEvent, TrialResult, TrialSpec
from trainer.errors import ConfigError
from trainer.service.api import common_pb2, trainer_pb2
from trainer.service.worker import TrialAccepted, WorkerInfo

# The service refuses to guess these (a trial without them answers nothing),
# with what is accepted for each.
REQUIRED_FIELDS: Mapping[str, str] = {
    "scaling_factor": "a number > 0 within the worker's range (see GetInfo)",
    "participation": "(0, 1]",
}
SPEC_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrialSpec))
_TRIAL_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

StreamItem = TrialAccepted | RoundEvent | EvalProgressEvent | TrialResult


# ------------------------------------------------------------------ spec ----


def spec_from_proto(
    msg: common_pb2.TrialSpec,
    *,
    defaults: Mapping[str, Any] | None = None,
    required: Mapping[str, str] = REQUIRED_FIELDS,
) -> TrialSpec:
    """Build a validated TrialSpec; missing fields take ``defaults``, then TrialSpec's own.

    Raises ConfigError naming the first missing required field or bad value.
    """
    values: dict[str, Any] = dict(defaults or {})
    for name in SPEC_FIELDS:
        if msg.HasField(name):
            value = getattr(msg, name)
            # NaN/inf reach us only through the wire format; say what is accepted.
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(name, f"must be a finite number, got {value}",
                                  accepted="a finite number")
            values[name] = value
        elif name in required:
            raise ConfigError(name, "is required", accepted=required[name])
    return TrialSpec(**values)


def spec_to_proto(spec: TrialSpec | Mapping[str, Any]) -> common_pb2.TrialSpec:
    """A proto TrialSpec; a Mapping may be partial (the server fills defaults and validates)."""
    values = spec.to_dict() if isinstance(spec, TrialSpec) else dict(spec)
    msg = common_pb2.TrialSpec()
    for name, value in values.items():
        if name not in SPEC_FIELDS:
            raise ConfigError(name, "unknown field", accepted=", ".join(SPEC_FIELDS))
        if value is None:
            continue
        try:
            setattr(msg, name, value)
        except (TypeError, ValueError) as exc:
            kind = type(getattr(msg, name)).__name__
            raise ConfigError(name, f"cannot send {value!r} as {kind}: {exc}") from None
    return msg


def trial_id_from_request(request: trainer_pb2.TrialRequest) -> str:
    """The request's trial id, or a fresh one when it is empty."""
    if not request.trial_id:
        return uuid.uuid4().hex[:16]
    if not _TRIAL_ID.fullmatch(request.trial_id):
        raise ConfigError("trial_id", f"invalid id {request.trial_id[:40]!r}",
                          accepted="1-128 characters from A-Z a-z 0-9 . _ : -")
    return request.trial_id


def trial_request(spec: TrialSpec | Mapping[str, Any], *, trial_id: str = "") -> trainer_pb2.TrialRequest:
    return trainer_pb2.TrialRequest(trial_id=trial_id, spec=spec_to_proto(spec))


# ---------------------------------------------------------------- events ----


def result_to_proto(result: TrialResult) -> common_pb2.TrialResult:
    # default=str: a record that is not quite JSON still reaches the client as text.
    return common_pb2.TrialResult(
        pass_at_1=result.pass_at_1,
        pass_at_k=result.pass_at_k,
        k=result.k,
        stderr=result.stderr,
        stderr_at_1=result.stderr_at_1,
        n=result.n,
        problems=list(result.problems),
        correct=list(result.correct),
        timings={str(key): float(value) for key, value in result.timings.items()},
        record_json=json.dumps(dict(result.record), sort_keys=True, default=str),
    )


def result_from_proto(msg: common_pb2.TrialResult) -> TrialResult:
    return TrialResult(
        pass_at_1=msg.pass_at_1,
        pass_at_k=msg.pass_at_k,
        k=msg.k,
        stderr=msg.stderr,
        stderr_at_1=msg.stderr_at_1,
        n=msg.n,
        problems=tuple(msg.problems),
        correct=tuple(msg.correct),
        timings=dict(msg.timings),
        record=json.loads(msg.record_json) if msg.record_json else {},
    )


def event_to_proto(trial_id: str, item: StreamItem) -> trainer_pb2.TrialEvent:
    """Wrap one domain event (or the accepted notice, or the result) in a TrialEvent."""
    out = trainer_pb2.TrialEvent(trial_id=trial_id)
    if isinstance(item, RoundEvent):
        out.round.CopyFrom(trainer_pb2.RoundProgress(
            round=item.round, total_rounds=item.total_rounds, clients=list(item.clients),
            train_loss=item.train_loss, update_norm=item.update_norm, seconds=item.seconds))
        if item.intermediate is not None and not math.isnan(item.intermediate):
            out.round.intermediate = item.intermediate
    elif isinstance(item, EvalProgressEvent):
        out.eval.CopyFrom(trainer_pb2.EvalProgress(stage=item.stage, done=item.done,
                                                   total=item.total))
    elif isinstance(item, TrialResult):
        out.result.CopyFrom(result_to_proto(item))
    elif isinstance(item, TrialAccepted):
        out.accepted.CopyFrom(trainer_pb2.TrialAccepted(
            trial_id=item.trial_id, worker=item.worker, spec=spec_to_proto(item.spec)))
    else:
        raise TypeError(f"not a trial event: {type(item).__name__}")
    return out


def event_from_proto(msg: trainer_pb2.TrialEvent) -> StreamItem:
    """The domain object inside a TrialEvent."""
    kind = msg.WhichOneof("event")
    if kind == "round":
        r = msg.round
        return RoundEvent(round=r.round, total_rounds=r.total_rounds, clients=tuple(r.clients),
                          train_loss=r.train_loss, update_norm=r.update_norm, seconds=r.seconds,
                          intermediate=r.intermediate if r.HasField("intermediate") else None)
    if kind == "eval":
        return EvalProgressEvent(stage=msg.eval.stage, done=msg.eval.done, total=msg.eval.total)
    if kind == "result":
        return result_from_proto(msg.result)
    if kind == "accepted":
        a = msg.accepted
        return TrialAccepted(trial_id=a.trial_id, worker=a.worker,
                             spec=spec_from_proto(a.spec, required={}))
    raise ValueError(f"trial event {msg.trial_id!r} carries no event")


# ------------------------------------------------------------------ info ----


def info_to_proto(info: WorkerInfo) -> trainer_pb2.WorkerInfo:
    return trainer_pb2.WorkerInfo(**dataclasses.asdict(info))


def info_from_proto(msg: trainer_pb2.WorkerInfo) -> WorkerInfo:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(WorkerInfo):
        value = getattr(msg, f.name)
        values[f.name] = tuple(value) if f.name in ("allowed_models", "running_trials", "devices") else value
    return WorkerInfo(**values)
