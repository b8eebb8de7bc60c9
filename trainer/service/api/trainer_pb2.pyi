from trainer.service.api import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrialRequest(_message.Message):
    __slots__ = ("trial_id", "spec")
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    spec: _common_pb2.TrialSpec
    def __init__(self, trial_id: _Optional[str] = ..., spec: _Optional[_Union[_common_pb2.TrialSpec, _Mapping]] = ...) -> None: ...

class TrialAccepted(_message.Message):
    __slots__ = ("trial_id", "worker", "spec")
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    worker: str
    spec: _common_pb2.TrialSpec
    def __init__(self, trial_id: _Optional[str] = ..., worker: _Optional[str] = ..., spec: _Optional[_Union[_common_pb2.TrialSpec, _Mapping]] = ...) -> None: ...

class RoundProgress(_message.Message):
    __slots__ = ("round", "total_rounds", "clients", "train_loss", "update_norm", "seconds", "intermediate")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_NORM_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_FIELD_NUMBER: _ClassVar[int]
    round: int
    total_rounds: int
    clients: _containers.RepeatedScalarFieldContainer[int]
    train_loss: float
    update_norm: float
    seconds: float
    intermediate: float
    def __init__(self, round: _Optional[int] = ..., total_rounds: _Optional[int] = ..., clients: _Optional[_Iterable[int]] = ..., train_loss: _Optional[float] = ..., update_norm: _Optional[float] = ..., seconds: _Optional[float] = ..., intermediate: _Optional[float] = ...) -> None: ...

class EvalProgress(_message.Message):
    __slots__ = ("stage", "done", "total")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    stage: str
    done: int
    total: int
    def __init__(self, stage: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class TrialEvent(_message.Message):
    __slots__ = ("trial_id", "accepted", "round", "eval", "result")
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    EVAL_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    accepted: TrialAccepted
    round: RoundProgress
    eval: EvalProgress
    result: _common_pb2.TrialResult
    def __init__(self, trial_id: _Optional[str] = ..., accepted: _Optional[_Union[TrialAccepted, _Mapping]] = ..., round: _Optional[_Union[RoundProgress, _Mapping]] = ..., eval: _Optional[_Union[EvalProgress, _Mapping]] = ..., result: _Optional[_Union[_common_pb2.TrialResult, _Mapping]] = ...) -> None: ...

class CancelTrialRequest(_message.Message):
    __slots__ = ("trial_id",)
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    def __init__(self, trial_id: _Optional[str] = ...) -> None: ...

class CancelTrialResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    def __init__(self, cancelled: _Optional[bool] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("version", "worker", "model", "default_problems", "budget_profile", "capacity", "busy", "idle", "min_scaling_factor", "max_scaling_factor", "allowed_models", "running_trials", "draining", "devices", "auto_dtype")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_PROFILE_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    MIN_SCALING_FACTOR_FIELD_NUMBER: _ClassVar[int]
    MAX_SCALING_FACTOR_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TRIALS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    AUTO_DTYPE_FIELD_NUMBER: _ClassVar[int]
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
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    running_trials: _containers.RepeatedScalarFieldContainer[str]
    draining: bool
    devices: _containers.RepeatedScalarFieldContainer[str]
    auto_dtype: str
    def __init__(self, version: _Optional[str] = ..., worker: _Optional[str] = ..., model: _Optional[str] = ..., default_problems: _Optional[str] = ..., budget_profile: _Optional[str] = ..., capacity: _Optional[int] = ..., busy: _Optional[int] = ..., idle: _Optional[int] = ..., min_scaling_factor: _Optional[float] = ..., max_scaling_factor: _Optional[float] = ..., allowed_models: _Optional[_Iterable[str]] = ..., running_trials: _Optional[_Iterable[str]] = ..., draining: _Optional[bool] = ..., devices: _Optional[_Iterable[str]] = ..., auto_dtype: _Optional[str] = ...) -> None: ...
