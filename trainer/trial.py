"""One trial end to end: federated LoRA training, then HumanEval pass@k of the result.

This is the real :class:`trainer.contract.TrialFunction` that the trainer
service and ``scalefed train`` run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from trainer.contract import EvalProgressEvent, TrialEvent, TrialResult, TrialSpec
from trainer.errors import ConfigError, TrialCancelledError
from trainer.evaluation.evaluator import EvalConfig, evaluate_model, versions
from trainer.pool import ModelPool

# Base models kept between trials (at most DEFAULT_MAX_IDLE idle ones).
MODEL_POOL = ModelPool()


def eval_config(spec: TrialSpec, *, device: str = "cpu") -> EvalConfig:
    """The evaluation a trial spec asks for (common random numbers: eval_seed, fixed subset);
    ``device`` (resolved) sets only how many rows decode together, never what is sampled."""
    from trainer.evaluation.engine import batch_rows_for

    ks = (1, spec.k) if spec.k != 1 else (1,)
    return EvalConfig(problems=spec.problems, n=spec.samples, ks=ks, temperature=spec.temperature,
                      top_p=spec.top_p, max_new_tokens=spec.max_new_tokens, seed=spec.eval_seed,
                      engine=spec.engine, batch_rows=batch_rows_for(device))


def run_trial(spec: TrialSpec, *, on_event: Callable[[TrialEvent], None] | None = None,
              cancel: threading.Event | None = None, progress: bool | None = None) -> TrialResult:
    """Train federated as ``spec`` says, evaluate, and return pass@1 / pass@k with the run record."""
    from trainer.devices import resolve
    from trainer.federated.rounds import train_federated
    from trainer.threads import configure_threads

    started = time.perf_counter()
    configure_threads()  # before the first torch op of the trial (training and sampling)
    placement = resolve(device=spec.device, dtype=spec.dtype)  # once, named in the record
    if spec.engine == "int8" and placement.device != "cpu":
        raise ConfigError("engine", f"int8 runs on the CPU only, not {placement.device}",
                          accepted="prefix or reference, or device = cpu")
    config = eval_config(spec, device=placement.device)  # validate before minutes of training
    with MODEL_POOL.borrow(spec.model, dtype=placement.dtype,
                           device=placement.device) as loaded:
        load_s = time.perf_counter() - started
        if cancel is not None and cancel.is_set():
            raise TrialCancelledError("cancelled while loading the model")
        run = train_federated(loaded=loaded, spec=spec, on_event=on_event, cancel=cancel,
                              progress=progress)
        try:
            if cancel is not None and cancel.is_set():
                raise TrialCancelledError("cancelled after training")

            def report_progress(stage: str, done: int, total: int) -> None:
                if on_event is not None:
                    on_event(EvalProgressEvent(stage=stage, done=done, total=total))

            eval_start = time.perf_counter()
            report = evaluate_model(run.model, loaded.tokenizer, config=config,
                                    model_name=spec.model, on_progress=report_progress,
                                    cancel=cancel)
            eval_s = time.perf_counter() - eval_start
        finally:
            run.release()
    k_key = f"pass@{spec.k}"
    timings = {"load_s": load_s, **{f"train.{k}": v for k, v in run.timings.items()},
               "eval_s": eval_s, "generate_s": report.timings["generate_s"],
               "execute_s": report.timings["execute_s"],
               "total_s": time.perf_counter() - started}
    record: dict[str, Any] = {
        "params": spec.to_dict(),
        "placement": placement.to_record(),
        "pass@1": report.pass_at["pass@1"], k_key: report.pass_at[k_key],
        "stderr": {key: report.stderr[key] for key in report.pass_at},
        "training": run.to_record(),
        "evaluation": report.to_dict(),
        "timings": timings,
        "versions": versions(),
    }
    return TrialResult(pass_at_1=report.pass_at["pass@1"], pass_at_k=report.pass_at[k_key],
                       k=spec.k, stderr=report.stderr[k_key], stderr_at_1=report.stderr["pass@1"],
                       n=report.n, problems=report.problems, correct=report.correct,
                       timings=timings, record=record)
