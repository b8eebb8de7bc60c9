from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StudyOverrides(_message.Message):
    __slots__ = ("storage", "n_trials")
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    N_TRIALS_FIELD_NUMBER: _ClassVar[int]
    storage: str
    n_trials: int
    def __init__(self, storage: _Optional[str] = ..., n_trials: _Optional[int] = ...) -> None: ...

class StartStudyRequest(_message.Message):
    __slots__ = ("study_file", "study_toml", "overrides")
    STUDY_FILE_FIELD_NUMBER: _ClassVar[int]
    STUDY_TOML_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    study_file: str
    study_toml: str
    overrides: StudyOverrides
    def __init__(self, study_file: _Optional[str] = ..., study_toml: _Optional[str] = ..., overrides: _Optional[_Union[StudyOverrides, _Mapping]] = ...) -> None: ...

class ResumeStudyRequest(_message.Message):
    __slots__ = ("study", "study_file", "study_toml", "overrides")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    STUDY_FILE_FIELD_NUMBER: _ClassVar[int]
    STUDY_TOML_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    study: str
    study_file: str
    study_toml: str
    overrides: StudyOverrides
    def __init__(self, study: _Optional[str] = ..., study_file: _Optional[str] = ..., study_toml: _Optional[str] = ..., overrides: _Optional[_Union[StudyOverrides, _Mapping]] = ...) -> None: ...

class StopStudyRequest(_message.Message):
    __slots__ = ("study", "wait")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    study: str
    wait: bool
    def __init__(self, study: _Optional[str] = ..., wait: _Optional[bool] = ...) -> None: ...

class ListStudiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListStudiesResponse(_message.Message):
    __slots__ = ("studies",)
    STUDIES_FIELD_NUMBER: _ClassVar[int]
    studies: _containers.RepeatedCompositeFieldContainer[Study]
    def __init__(self, studies: _Optional[_Iterable[_Union[Study, _Mapping]]] = ...) -> None: ...

class GetStudyRequest(_message.Message):
    __slots__ = ("study", "include_trials")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TRIALS_FIELD_NUMBER: _ClassVar[int]
    study: str
    include_trials: bool
    def __init__(self, study: _Optional[str] = ..., include_trials: _Optional[bool] = ...) -> None: ...

class GetBestRequest(_message.Message):
    __slots__ = ("study", "distribution")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    study: str
    distribution: str
    def __init__(self, study: _Optional[str] = ..., distribution: _Optional[str] = ...) -> None: ...

class ParamValue(_message.Message):
    __slots__ = ("number", "integer", "text", "flag")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    number: float
    integer: int
    text: str
    flag: bool
    def __init__(self, number: _Optional[float] = ..., integer: _Optional[int] = ..., text: _Optional[str] = ..., flag: _Optional[bool] = ...) -> None: ...

class Study(_message.Message):
    __slots__ = ("name", "storage", "state", "running", "error", "distributions")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Study.State]
        RUNNING: _ClassVar[Study.State]
        IDLE: _ClassVar[Study.State]
        COMPLETED: _ClassVar[Study.State]
        FAILED: _ClassVar[Study.State]
    STATE_UNSPECIFIED: Study.State
    RUNNING: Study.State
    IDLE: Study.State
    COMPLETED: Study.State
    FAILED: Study.State
    NAME_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    storage: str
    state: Study.State
    running: bool
    error: str
    distributions: _containers.RepeatedCompositeFieldContainer[DistributionProgress]
    def __init__(self, name: _Optional[str] = ..., storage: _Optional[str] = ..., state: _Optional[_Union[Study.State, str]] = ..., running: _Optional[bool] = ..., error: _Optional[str] = ..., distributions: _Optional[_Iterable[_Union[DistributionProgress, _Mapping]]] = ...) -> None: ...

class DistributionProgress(_message.Message):
    __slots__ = ("label", "study_name", "exists", "n_trials", "complete", "states", "stopped", "trials")
    class StatesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    LABEL_FIELD_NUMBER: _ClassVar[int]
    STUDY_NAME_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    N_TRIALS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    label: str
    study_name: str
    exists: bool
    n_trials: int
    complete: int
    states: _containers.ScalarMap[str, int]
    stopped: str
    trials: _containers.RepeatedCompositeFieldContainer[Trial]
    def __init__(self, label: _Optional[str] = ..., study_name: _Optional[str] = ..., exists: _Optional[bool] = ..., n_trials: _Optional[int] = ..., complete: _Optional[int] = ..., states: _Optional[_Mapping[str, int]] = ..., stopped: _Optional[str] = ..., trials: _Optional[_Iterable[_Union[Trial, _Mapping]]] = ...) -> None: ...

class Trial(_message.Message):
    __slots__ = ("number", "state", "params", "value", "stderr", "intermediate", "fail_reason")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    class IntermediateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_FIELD_NUMBER: _ClassVar[int]
    FAIL_REASON_FIELD_NUMBER: _ClassVar[int]
    number: int
    state: str
    params: _containers.MessageMap[str, ParamValue]
    value: float
    stderr: float
    intermediate: _containers.ScalarMap[int, float]
    fail_reason: str
    def __init__(self, number: _Optional[int] = ..., state: _Optional[str] = ..., params: _Optional[_Mapping[str, ParamValue]] = ..., value: _Optional[float] = ..., stderr: _Optional[float] = ..., intermediate: _Optional[_Mapping[int, float]] = ..., fail_reason: _Optional[str] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("params", "mean", "sd", "lower", "upper", "level_lower", "level_upper")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    SD_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    LEVEL_LOWER_FIELD_NUMBER: _ClassVar[int]
    LEVEL_UPPER_FIELD_NUMBER: _ClassVar[int]
    params: _containers.MessageMap[str, ParamValue]
    mean: float
    sd: float
    lower: float
    upper: float
    level_lower: float
    level_upper: float
    def __init__(self, params: _Optional[_Mapping[str, ParamValue]] = ..., mean: _Optional[float] = ..., sd: _Optional[float] = ..., lower: _Optional[float] = ..., upper: _Optional[float] = ..., level_lower: _Optional[float] = ..., level_upper: _Optional[float] = ...) -> None: ...

class Interval(_message.Message):
    __slots__ = ("low", "high")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    low: float
    high: float
    def __init__(self, low: _Optional[float] = ..., high: _Optional[float] = ...) -> None: ...

class ChoiceList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[ParamValue]
    def __init__(self, values: _Optional[_Iterable[_Union[ParamValue, _Mapping]]] = ...) -> None: ...

class Region(_message.Message):
    __slots__ = ("mass", "n_points", "ranges", "choices", "description")
    class RangesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Interval
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Interval, _Mapping]] = ...) -> None: ...
    class ChoicesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ChoiceList
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ChoiceList, _Mapping]] = ...) -> None: ...
    MASS_FIELD_NUMBER: _ClassVar[int]
    N_POINTS_FIELD_NUMBER: _ClassVar[int]
    RANGES_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    mass: float
    n_points: int
    ranges: _containers.MessageMap[str, Interval]
    choices: _containers.MessageMap[str, ChoiceList]
    description: str
    def __init__(self, mass: _Optional[float] = ..., n_points: _Optional[int] = ..., ranges: _Optional[_Mapping[str, Interval]] = ..., choices: _Optional[_Mapping[str, ChoiceList]] = ..., description: _Optional[str] = ...) -> None: ...

class Verification(_message.Message):
    __slots__ = ("replicates", "lift", "lift_lower", "lift_upper", "optimum", "baseline", "optimum_values", "baseline_values")
    class OptimumEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    class BaselineEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    REPLICATES_FIELD_NUMBER: _ClassVar[int]
    LIFT_FIELD_NUMBER: _ClassVar[int]
    LIFT_LOWER_FIELD_NUMBER: _ClassVar[int]
    LIFT_UPPER_FIELD_NUMBER: _ClassVar[int]
    OPTIMUM_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    OPTIMUM_VALUES_FIELD_NUMBER: _ClassVar[int]
    BASELINE_VALUES_FIELD_NUMBER: _ClassVar[int]
    replicates: int
    lift: float
    lift_lower: float
    lift_upper: float
    optimum: _containers.MessageMap[str, ParamValue]
    baseline: _containers.MessageMap[str, ParamValue]
    optimum_values: _containers.RepeatedScalarFieldContainer[float]
    baseline_values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, replicates: _Optional[int] = ..., lift: _Optional[float] = ..., lift_lower: _Optional[float] = ..., lift_upper: _Optional[float] = ..., optimum: _Optional[_Mapping[str, ParamValue]] = ..., baseline: _Optional[_Mapping[str, ParamValue]] = ..., optimum_values: _Optional[_Iterable[float]] = ..., baseline_values: _Optional[_Iterable[float]] = ...) -> None: ...

class ObservedBest(_message.Message):
    __slots__ = ("number", "params", "value", "stderr")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    number: int
    params: _containers.MessageMap[str, ParamValue]
    value: float
    stderr: float
    def __init__(self, number: _Optional[int] = ..., params: _Optional[_Mapping[str, ParamValue]] = ..., value: _Optional[float] = ..., stderr: _Optional[float] = ...) -> None: ...

class BestAnswer(_message.Message):
    __slots__ = ("study", "distribution", "study_name", "exists", "trials_used", "scaling_factor", "participation", "predicted", "observed_best", "stopped", "argmax_region", "epsilon_region", "noise_sd", "verification", "heterogeneity", "is_prediction")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    STUDY_NAME_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    TRIALS_USED_FIELD_NUMBER: _ClassVar[int]
    SCALING_FACTOR_FIELD_NUMBER: _ClassVar[int]
    PARTICIPATION_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_BEST_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    ARGMAX_REGION_FIELD_NUMBER: _ClassVar[int]
    EPSILON_REGION_FIELD_NUMBER: _ClassVar[int]
    NOISE_SD_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    HETEROGENEITY_FIELD_NUMBER: _ClassVar[int]
    IS_PREDICTION_FIELD_NUMBER: _ClassVar[int]
    study: str
    distribution: str
    study_name: str
    exists: bool
    trials_used: int
    scaling_factor: float
    participation: float
    predicted: Prediction
    observed_best: ObservedBest
    stopped: str
    argmax_region: Region
    epsilon_region: Region
    noise_sd: float
    verification: Verification
    heterogeneity: float
    is_prediction: bool
    def __init__(self, study: _Optional[str] = ..., distribution: _Optional[str] = ..., study_name: _Optional[str] = ..., exists: _Optional[bool] = ..., trials_used: _Optional[int] = ..., scaling_factor: _Optional[float] = ..., participation: _Optional[float] = ..., predicted: _Optional[_Union[Prediction, _Mapping]] = ..., observed_best: _Optional[_Union[ObservedBest, _Mapping]] = ..., stopped: _Optional[str] = ..., argmax_region: _Optional[_Union[Region, _Mapping]] = ..., epsilon_region: _Optional[_Union[Region, _Mapping]] = ..., noise_sd: _Optional[float] = ..., verification: _Optional[_Union[Verification, _Mapping]] = ..., heterogeneity: _Optional[float] = ..., is_prediction: _Optional[bool] = ...) -> None: ...
