"""The trial contract: what one federated trial takes, reports and returns.

A trial's parameters are one flat, frozen, validated record (``TrialSpec``);
``TrialSpec.to_dict()`` is what gets logged and stored next to its result.
Transport layers (gRPC, CLI) convert to and from these types and never add
science of their own.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from trainer.devices import check_device, check_dtype
from trainer.errors import ConfigError
from trainer.evaluation.engine import DEFAULT_ENGINE, check_engine
from trainer.helptext import meta

Distribution = Literal["iid", "dirichlet", "natural"]
BudgetMode = Literal["rounds", "client_steps"]
DISTRIBUTIONS: tuple[str, ...] = ("iid", "dirichlet", "natural")
BUDGET_MODES: tuple[str, ...] = ("rounds", "client_steps")
# The real trial function: federated training, then HumanEval evaluation.
DEFAULT_TRIAL_FN = "trainer.trial:run_trial"


@dataclass(frozen=True, kw_only=True)
class TrialSpec:
    """Every parameter of one federated trial, flat. Validated on construction."""

    model: str = field(default="smollm2-135m", metadata=meta("model preset, HF directory or hub id"))
    distribution: str = field(default="iid", metadata=meta("client data split: iid, dirichlet, natural"))
    alpha: float = field(default=0.5, metadata=meta("Dirichlet concentration (dirichlet only); > 0"))
    clients: int = field(default=10, metadata=meta("number of clients K"))
    participation: float = field(default=0.5, metadata=meta("fraction of clients per round, in (0, 1]"))
    scaling_factor: float = field(default=1.0, metadata=meta("server factor s on the mean update; 1 = FedAvg"))
    budget_mode: str = field(default="client_steps", metadata=meta("rounds or client_steps (compute-matched)"))
    rounds: int = field(default=4, metadata=meta("rounds (budget_mode=rounds)"))
    client_steps: int = field(default=40, metadata=meta("total local steps over all clients and rounds"))
    local_steps: int = field(default=2, metadata=meta("local optimizer steps per client per round"))
    batch_size: int = field(default=4, metadata=meta("local batch size"))
    learning_rate: float = field(default=3e-4, metadata=meta("local learning rate"))
    seq_len: int = field(default=256, metadata=meta("max training tokens per example"))
    lora_rank: int = field(default=8, metadata=meta("LoRA rank r"))
    lora_alpha: int = field(default=16, metadata=meta("LoRA alpha"))
    lora_targets: str = field(default="q_proj,v_proj", metadata=meta("comma-separated target modules"))
    fedprox_mu: float = field(default=0.0, metadata=meta("FedProx proximal weight; 0 disables"))
    corpus: str = field(default="stdlib", metadata=meta(
        "training corpus: stdlib, stdlib#doctest (docstrings with >>> examples), a source dir, or a data file"))
    max_examples: int = field(default=2000, metadata=meta("cap on corpus examples used"))
    problems: str = field(default="40", metadata=meta("HumanEval subset: a count N or comma-separated ids"))
    samples: int = field(default=10, metadata=meta("samples per problem n (>= k)"))
    k: int = field(default=10, metadata=meta("k of the reported pass@k"))
    temperature: float = field(default=0.8, metadata=meta("sampling temperature"))
    top_p: float = field(default=0.95, metadata=meta("nucleus sampling top_p"))
    max_new_tokens: int = field(default=200, metadata=meta("max generated tokens per sample"))
    seed: int = field(default=0, metadata=meta("seed for client sampling and training"))
    partition_seed: int = field(default=0, metadata=meta("seed for the data partition"))
    eval_seed: int = field(default=0, metadata=meta("seed for evaluation sampling"))
    engine: str = field(default=DEFAULT_ENGINE, metadata=meta(
        "sampling engine: prefix (shared-prefix KV cache, in the trial's dtype; fp32 is its "
        "former name), int8 (int8 GEMMs; fails pass@10 parity, for measurement only) or "
        "reference (transformers' DynamicCache, the slow baseline)"))
    dtype: str = field(default="auto", metadata=meta(
        "precision of the base weights in training and sampling: float32, bfloat16, or auto "
        "(bfloat16 on CUDA and on CPUs with AMX-BF16 or AVX512-BF16, else float32); the adapter, "
        "its optimizer state and the loss stay float32"))
    device: str = field(default="auto", metadata=meta(
        "where the trial runs: cpu, cuda, cuda:N, or auto (the first CUDA device, else the CPU)"))

    def __post_init__(self) -> None:
        validate_spec(self)

    def to_dict(self) -> dict[str, Any]:
        """The flat parameter dict that is logged and stored with the result."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialSpec:
        """Build from a flat dict, rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], "unknown field", accepted=", ".join(sorted(known)))
        return cls(**dict(data))

    def replace(self, **changes: Any) -> TrialSpec:
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------- bounds ----

SEED_MAX = 2**32 - 1  # scikit-learn's k-means takes seeds in [0, 2^32 - 1]
# Every size field has an upper bound, so that no single request can make a
# worker allocate without limit (lora_rank=2^31-1 once asked for 550 GB). The
# bounds sit far above every profile in studies/.
INT_RANGES: Mapping[str, tuple[int, int]] = {
    "clients": (1, 1_000),
    "rounds": (1, 10_000),
    "client_steps": (1, 1_000_000),
    "local_steps": (1, 10_000),
    "batch_size": (1, 512),
    "seq_len": (1, 8_192),
    "lora_rank": (1, 512),
    "lora_alpha": (1, 65_536),
    "max_examples": (1, 100_000),
    "samples": (1, 1_000),
    "k": (1, 1_000),
    "max_new_tokens": (1, 4_096),
    "seed": (0, SEED_MAX),
    "partition_seed": (0, SEED_MAX),
    "eval_seed": (0, SEED_MAX),
}
# Tokens in one training batch (batch_size x seq_len): the activations' size.
MAX_BATCH_TOKENS = 65_536
# Longest accepted string per field; checked first, so an error never echoes a huge value.
STR_LIMITS: Mapping[str, int] = {
    "model": 1_024, "distribution": 32, "budget_mode": 32, "lora_targets": 512,
    "corpus": 4_096, "problems": 4_096, "engine": 32, "dtype": 16, "device": 16,
}
# Finite ranges of float fields, (low, low inclusive, high): outside them the
# arithmetic overflows (temperature=1e-300 makes the logits infinite).
FLOAT_RANGES: Mapping[str, tuple[float, bool, float]] = {
    "alpha": (0.0, False, 1e6),
    "participation": (0.0, False, 1.0),
    "scaling_factor": (0.0, False, 100.0),
    "learning_rate": (0.0, False, 1.0),
    "fedprox_mu": (0.0, True, 1_000.0),
    "top_p": (0.0, False, 1.0),
}
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-3, 100.0


def _check_int(name: str, value: Any) -> None:
    low, high = INT_RANGES[name]
    accepted = f"integer in [{low}, {high}]"
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(name, f"must be an integer, got {type(value).__name__}",
                          accepted=accepted)
    if not low <= value <= high:
        raise ConfigError(name, f"{value} is out of range", accepted=accepted)


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(name, f"must be a finite number, got {str(value)[:40]!r}",
                          accepted="a finite number")
    return float(value)


def _check_float(name: str, value: Any) -> None:
    low, closed, high = FLOAT_RANGES[name]
    accepted = f"{'[' if closed else '('}{low:g}, {high:g}]"
    x = _finite(name, value)
    if not (low <= x if closed else low < x) or x > high:
        raise ConfigError(name, f"{x:g} is out of range", accepted=accepted)


def _check_str(name: str, value: Any) -> str:
    limit = STR_LIMITS[name]
    if not isinstance(value, str):
        raise ConfigError(name, f"must be a string, got {type(value).__name__}",
                          accepted=f"a string of at most {limit} characters")
    if len(value) > limit:
        raise ConfigError(name, f"is {len(value)} characters long",
                          accepted=f"at most {limit} characters")
    return value


def validate_spec(spec: TrialSpec) -> None:
    """Raise ConfigError naming the first bad field and its accepted range."""
    for name in STR_LIMITS:
        _check_str(name, getattr(spec, name))
    if not spec.model:
        raise ConfigError("model", "is required", accepted="a preset name, a directory, or a hub id")
    if spec.distribution not in DISTRIBUTIONS:
        raise ConfigError(
            "distribution", f"unknown value {spec.distribution!r}", accepted=", ".join(DISTRIBUTIONS)
        )
    check_engine(spec.engine)
    check_dtype(spec.dtype)
    check_device(spec.device)
    if spec.budget_mode not in BUDGET_MODES:
        raise ConfigError("budget_mode", f"unknown value {spec.budget_mode!r}",
                          accepted=", ".join(BUDGET_MODES))
    for name in INT_RANGES:
        _check_int(name, getattr(spec, name))
    for name in FLOAT_RANGES:
        _check_float(name, getattr(spec, name))
    temperature = _finite("temperature", spec.temperature)
    if temperature != 0 and not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
        raise ConfigError("temperature", f"{temperature:g} is out of range",
                          accepted=f"0 (greedy) or [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]")
    if spec.samples < spec.k:
        raise ConfigError("samples", f"n={spec.samples} is smaller than k={spec.k}",
                          accepted=f">= k ({spec.k})")
    if spec.batch_size * spec.seq_len > MAX_BATCH_TOKENS:
        raise ConfigError("batch_size", f"batch_size x seq_len = {spec.batch_size * spec.seq_len} "
                          "tokens per batch is too many",
                          accepted=f"batch_size x seq_len <= {MAX_BATCH_TOKENS}")
    if not spec.lora_targets.strip():
        raise ConfigError("lora_targets", "is empty", accepted="comma-separated module names")
    if not spec.problems.strip():
        raise ConfigError("problems", "is empty", accepted="a count N or comma-separated task ids")


def participants_per_round(clients: int, participation: float) -> int:
    """``max(1, round(p * K))`` clients per round, rounding halves up (p=0.25, K=10 -> 3)."""
    return min(clients, max(1, math.floor(participation * clients + 0.5)))


def planned_rounds(spec: TrialSpec) -> int:
    """Number of rounds under the spec's budget mode (budget rule in trainer.federated.rounds's docstring)."""
    if spec.budget_mode == "rounds":
        return spec.rounds
    per_round = participants_per_round(spec.clients, spec.participation) * spec.local_steps
    return max(1, spec.client_steps // per_round)



# ---------------------------------------------------------------- events ----


@dataclass(frozen=True, kw_only=True)
class RoundEvent:
    """One finished federated round."""

    round: int
    total_rounds: int
    clients: tuple[int, ...]
    train_loss: float
    update_norm: float
    seconds: float
    intermediate: float | None = None


@dataclass(frozen=True, kw_only=True)
class EvalProgressEvent:
    """Evaluation progress: samples generated / executed so far."""

    stage: str  # "generate" or "execute"
    done: int
    total: int


TrialEvent = RoundEvent | EvalProgressEvent


@dataclass(frozen=True, kw_only=True)
class TrialResult:
    """What a finished trial returns."""

    pass_at_1: float
    pass_at_k: float
    k: int
    stderr: float  # standard error of pass@k over problems
    stderr_at_1: float
    n: int
    problems: tuple[str, ...]
    correct: tuple[int, ...]  # per-problem number of passing samples, aligned with problems
    timings: Mapping[str, float]
    record: Mapping[str, Any]  # the full run record (JSON-serialisable)


class TrialFunction(Protocol):
    """Runs one trial. Must poll ``cancel`` and raise TrialCancelledError promptly when set."""

    def __call__(
        self,
        spec: TrialSpec,
        *,
        on_event: Callable[[TrialEvent], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> TrialResult: ...


def load_trial_function(ref: str = DEFAULT_TRIAL_FN, *, field: str = "trial_fn") -> TrialFunction:
    """Import ``module:function`` (the real one is ``trainer.trial:run_trial``).

    Modules resolve from the working directory too, like other ``module:function``
    loaders; a bad reference is a ConfigError on ``field``.
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(field, f"{ref!r} is not module:function",
                          accepted="module:function, e.g. " + DEFAULT_TRIAL_FN)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(field, f"cannot import {module_name}: {exc}",
                          accepted="an importable module:function") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(field, f"{module_name} has no callable {attr!r}",
                          accepted="an importable module:function")
    return cast(TrialFunction, fn)
