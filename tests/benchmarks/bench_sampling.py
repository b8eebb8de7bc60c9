"""Sampling engines against the previous path, and pass@k parity on the base model.

Every engine samples the same prompts with the same seed, n and token cap (the
quickstart's: 40 problems, n = 10, 128 tokens), so tokens/s ratios are measured
in one run on one machine. With ``--parity`` the completions are also executed
in the sandbox and pass@k is compared per problem: engines share problems and
the sampling seed (common random numbers), so the difference is judged by the
standard error of the paired per-problem differences.

An engine may carry its batch size as ``engine:rows``; the baseline
``reference:80`` is the previous path as it ran (80 rows).

    python tests/benchmarks/bench_sampling.py --problems 40 --parity
    python tests/benchmarks/bench_sampling.py --problems 8 --engines reference:80,fp32,int8
"""

from __future__ import annotations

import argparse
import math

from trainer.evaluation.engine import DEFAULT_BATCH_ROWS, ENGINES
from trainer.evaluation.evaluator import EvalConfig, EvalReport, evaluate_model
from trainer.evaluation.passk import pass_at_k
from trainer.models import load_model
from trainer.threads import configure_threads


def _per_problem(report: EvalReport, k: int) -> list[float]:
    return [pass_at_k(report.n, c, k) for c in report.correct]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--problems", default="40")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engines", default="reference:80,fp32",
                        help=f"comma-separated ENGINE[:ROWS], the first is the baseline "
                             f"({', '.join(ENGINES)}; ROWS defaults to {DEFAULT_BATCH_ROWS})")
    parser.add_argument("--parity", action="store_true", help="also execute and compare pass@k")
    args = parser.parse_args()
    threads = configure_threads()
    loaded = load_model(args.model)
    engines = args.engines.split(",")
    reports: dict[str, EvalReport] = {}
    for spec in engines:
        engine, _, rows = spec.partition(":")
        cfg = EvalConfig(problems=args.problems, n=args.n, ks=(1, args.k), seed=args.seed,
                         max_new_tokens=args.max_new_tokens, engine=engine,
                         batch_rows=int(rows or DEFAULT_BATCH_ROWS))
        if not args.parity:  # sampling only: skip execution by running zero problems' worth
            from trainer.evaluation.generation import sample_completions
            from trainer.evaluation.humaneval import prepare_prompt, select_problems

            prompts = [prepare_prompt(p["prompt"]) for p in select_problems(args.problems)]
            _, stats = sample_completions(loaded.model, loaded.tokenizer, prompts,
                                          config=cfg.sampling())
            rate, seconds, tokens = stats.tokens / stats.seconds, stats.seconds, stats.tokens
        else:
            reports[spec] = evaluate_model(loaded.model, loaded.tokenizer, config=cfg,
                                             model_name=args.model)
            t = reports[spec].timings
            rate, seconds = t["tokens_per_s"], t["generate_s"]
            tokens = round(rate * seconds)
        if spec == engines[0]:
            base_rate = rate
        print(f"{spec:<14} {tokens:6d} tokens in {seconds:6.1f}s = {rate:6.1f} tok/s  "
              f"x{rate / base_rate:.2f} vs {engines[0]}", flush=True)
    print(f"({args.problems} problems, n={args.n}, {args.max_new_tokens} tokens, "
          f"{threads} threads)")
    if args.parity:
        _parity(reports, engines, args.k)


def _parity(reports: dict[str, EvalReport], engines: list[str], k: int) -> None:
    base = _per_problem(reports[engines[0]], k)
    for engine in engines[1:]:
        other = _per_problem(reports[engine], k)
        diffs = [b - a for a, b in zip(base, other, strict=True)]
        mean = sum(diffs) / len(diffs)
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1))
        se = sd / math.sqrt(len(diffs))
        verdict = "parity" if abs(mean) <= 2 * se or mean == 0 else "DIFFERENT"
        print(f"pass@{k}: {engines[0]} {sum(base) / len(base):.3f}, {engine} "
              f"{sum(other) / len(other):.3f}; paired difference {mean:+.3f} ± {se:.3f} (SE) "
              f"-> {verdict} (parity: |diff| <= 2 SE)")


if __name__ == "__main__":
    main()
