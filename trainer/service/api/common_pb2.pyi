from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class TrialSpec(_message.Message):
    __slots__ = ("model", "distribution", "alpha", "clients", "participation", "scaling_factor", "budget_mode", "rounds", "client_steps", "local_steps", "batch_size", "learning_rate", "seq_len", "lora_rank", "lora_alpha", "lora_targets", "fedprox_mu", "corpus", "max_examples", "problems", "samples", "k", "temperature", "top_p", "max_new_tokens", "seed", "partition_seed", "eval_seed", "engine", "dtype", "device")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    PARTICIPATION_FIELD_NUMBER: _ClassVar[int]
    SCALING_FACTOR_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MODE_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    SEQ_LEN_FIELD_NUMBER: _ClassVar[int]
    LORA_RANK_FIELD_NUMBER: _ClassVar[int]
    LORA_ALPHA_FIELD_NUMBER: _ClassVar[int]
    LORA_TARGETS_FIELD_NUMBER: _ClassVar[int]
    FEDPROX_MU_FIELD_NUMBER: _ClassVar[int]
    CORPUS_FIELD_NUMBER: _ClassVar[int]
    MAX_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PARTITION_SEED_FIELD_NUMBER: _ClassVar[int]
    EVAL_SEED_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    model: str
    distribution: str
    alpha: float
    clients: int
    participation: float
    scaling_factor: float
    budget_mode: str
    rounds: int
    client_steps: int
    local_steps: int
    batch_size: int
    learning_rate: float
    seq_len: int
    lora_rank: int
    lora_alpha: int
    lora_targets: str
    fedprox_mu: float
    corpus: str
    max_examples: int
    problems: str
    samples: int
    k: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    partition_seed: int
    eval_seed: int
    engine: str
    dtype: str
    device: str
    def __init__(self, model: _Optional[str] = ..., distribution: _Optional[str] = ..., alpha: _Optional[float] = ..., clients: _Optional[int] = ..., participation: _Optional[float] = ..., scaling_factor: _Optional[float] = ..., budget_mode: _Optional[str] = ..., rounds: _Optional[int] = ..., client_steps: _Optional[int] = ..., local_steps: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate: _Optional[float] = ..., seq_len: _Optional[int] = ..., lora_rank: _Optional[int] = ..., lora_alpha: _Optional[int] = ..., lora_targets: _Optional[str] = ..., fedprox_mu: _Optional[float] = ..., corpus: _Optional[str] = ..., max_examples: _Optional[int] = ..., problems: _Optional[str] = ..., samples: _Optional[int] = ..., k: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_new_tokens: _Optional[int] = ..., seed: _Optional[int] = ..., partition_seed: _Optional[int] = ..., eval_seed: _Optional[int] = ..., engine: _Optional[str] = ..., dtype: _Optional[str] = ..., device: _Optional[str] = ...) -> None: ...

class TrialResult(_message.Message):
    __slots__ = ("pass_at_1", "pass_at_k", "k", "stderr", "stderr_at_1", "n", "problems", "correct", "timings", "record_json")
    class TimingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    PASS_AT_1_FIELD_NUMBER: _ClassVar[int]
    PASS_AT_K_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    STDERR_AT_1_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    RECORD_JSON_FIELD_NUMBER: _ClassVar[int]
    pass_at_1: float
    pass_at_k: float
    k: int
    stderr: float
    stderr_at_1: float
    n: int
    problems: _containers.RepeatedScalarFieldContainer[str]
    correct: _containers.RepeatedScalarFieldContainer[int]
    timings: _containers.ScalarMap[str, float]
    record_json: str
    def __init__(self, pass_at_1: _Optional[float] = ..., pass_at_k: _Optional[float] = ..., k: _Optional[int] = ..., stderr: _Optional[float] = ..., stderr_at_1: _Optional[float] = ..., n: _Optional[int] = ..., problems: _Optional[_Iterable[str]] = ..., correct: _Optional[_Iterable[int]] = ..., timings: _Optional[_Mapping[str, float]] = ..., record_json: _Optional[str] = ...) -> None: ...
