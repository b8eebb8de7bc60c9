"""Sampling speed, bf16 against fp32 and the previous release, with pass@k parity.

Three sides (:mod:`tests.benchmarks.sides`) sample and execute the same
HumanEval evaluation in fresh processes, alternating: ``previous`` (the last
release's code and default engine, fp32), ``fp32`` and ``bf16`` (this tree's
prefix engine with the weights in float32 and bfloat16). Every side draws the
same random numbers (per-sample streams: seed, prompt, sample index), so the
per-problem pass counts are paired: parity is a paired difference of pass@k
within 2 standard errors.

    python tests/benchmarks/bench_sampling.py                      # quickstart evaluation
    python tests/benchmarks/bench_sampling.py --problems 40 --n 10 --max-new-tokens 128
    python tests/benchmarks/bench_sampling.py --adapter --sides fp32,bf16   # a trained adapter

``--adapter`` first trains one quickstart trial's adapter (fp32, s = 2.8, p = 0.5)
and evaluates the adapted model on every side of this tree.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.sides import (
    SIDES,
    host_header,
    median,
    order,
    paired_difference,
    run_side,
)


def _pass_at(n: int, correct: list[int], k: int) -> list[float]:
    from trainer.evaluation.passk import pass_at_k

    return [pass_at_k(n, c, k) for c in correct]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", default="smollm2-solvable")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--adapter", action="store_true",
                        help="evaluate a freshly trained quickstart adapter (this tree only)")
    args = parser.parse_args()
    sides = [s for s in args.sides.split(",") if s]
    if unknown := set(sides) - set(SIDES):
        parser.error(f"unknown sides {sorted(unknown)}; accepted: {', '.join(SIDES)}")
    if args.adapter and "previous" in sides:
        parser.error("--adapter compares this tree's dtypes: use --sides fp32,bf16")
    print(host_header(), flush=True)
    payload = ["--problems", args.problems, "--n", str(args.n), "--k", str(args.k),
               "--max-new-tokens", str(args.max_new_tokens), "--seed", str(args.seed)]
    with tempfile.TemporaryDirectory() as tmp:
        if args.adapter:
            path = str(Path(tmp) / "adapter.pt")
            info = run_side("fp32", "adapter", ["--out", path])
            print(f"adapter: {info['params']} LoRA tensors after {info['rounds']} rounds "
                  f"(quickstart iid, s = 2.8, p = 0.5, trained in float32)", flush=True)
            payload += ["--adapter", path]
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for repeat in range(args.repeats):
            for side in order(repeat, sides):
                out = run_side(side, "sampling", payload)
                runs[side].append(out)
                print(f"  repeat {repeat + 1} {side:<8} generation {out['generate_s']:6.1f} s, "
                      f"{out['tokens']} tokens, {out['tokens'] / out['generate_s']:6.1f} tok/s; "
                      f"pass@{args.k} {out['pass'][f'pass@{args.k}']:.3f}", flush=True)
    seconds = {side: median([r["generate_s"] for r in runs[side]]) for side in sides}
    print(f"({args.problems}, n = {args.n}, {args.max_new_tokens} tokens, seed {args.seed}; "
          f"median generation seconds of {args.repeats})")
    for side in sides:
        print(f"{side:<8} {seconds[side]:7.1f} s")
    for base in ("previous", "fp32"):
        if base in seconds and "bf16" in seconds:
            print(f"bf16 vs {base}: {seconds[base] / seconds['bf16']:.2f}x faster")
    first = sides[0]
    ref = _pass_at(args.n, runs[first][0]["correct"], args.k)
    for side in sides[1:]:
        other = _pass_at(args.n, runs[side][0]["correct"], args.k)
        mean, se = paired_difference(ref, other)
        verdict = "parity" if abs(mean) <= 2 * se or mean == 0 else "DIFFERENT"
        print(f"pass@{args.k}: {first} {sum(ref) / len(ref):.3f}, {side} "
              f"{sum(other) / len(other):.3f}; paired difference {mean:+.3f} +/- {se:.3f} (SE) "
              f"-> {verdict} (|diff| <= 2 SE)")


if __name__ == "__main__":
    main()
