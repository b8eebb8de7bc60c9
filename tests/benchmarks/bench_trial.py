"""Wall time of one quickstart trial by phase: bf16 against fp32 and the previous release.

    python tests/benchmarks/bench_trial.py                      # quickstart, iid, s=1, p=0.5
    python tests/benchmarks/bench_trial.py --repeats 2 --trials 2
    python tests/benchmarks/bench_trial.py --sides bf16 --trials 2   # this tree's default only

Three sides (:mod:`tests.benchmarks.sides`) run the same trial in fresh
processes, alternating: ``previous`` (the last release's code and default
path), ``fp32`` and ``bf16`` (this tree, ``dtype`` float32 and bfloat16). The
phases say what limits a trial: model load (once per worker), corpus and
partition, federated training, generation and sandboxed execution. With
``--trials 2`` each process runs a second trial, as a study's later trials do:
the model stays loaded (the trainer's model pool) and the corpus and
partition come from their caches; the ratios use the last trial of each
process. The host's capabilities and GEMM rates come first: two-core hosts
differ by well over 1.5x, so compare trial times across machines only with them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.sides import SIDES, host_header, median, order, run_side

PHASES = ("load_s", "train.corpus_s", "train.tokenize_s", "train.partition_s",
          "train.setup_s", "train.train_s", "generate_s", "execute_s")


def _show(side: str, repeat: int, out: dict[str, Any]) -> None:
    for number, trial in enumerate(out["trials"], 1):
        t = trial["timings"]
        phases = ", ".join(f"{key.removeprefix('train.')} {t[key]:.1f}" for key in PHASES
                           if key in t and t[key] >= 0.05)
        print(f"  repeat {repeat + 1} {side:<8} trial {number}: {trial['wall_s']:6.1f} s "
              f"({phases}); pass@{trial['k']} {trial['pass_at_k']:.3f} +/- "
              f"{trial['stderr']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default="studies/quickstart.toml")
    parser.add_argument("--distribution", default="iid", help="a label of the study file")
    parser.add_argument("--scaling-factor", type=float, default=1.0)
    parser.add_argument("--participation", type=float, default=0.5)
    parser.add_argument("--trials", type=int, default=1,
                        help="trials per process (default 1); from the second on, the model "
                             "is already loaded, as in a study")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all sides (default 1)")
    parser.add_argument("--sides", default=",".join(SIDES),
                        help=f"comma-separated subset of {', '.join(SIDES)}")
    args = parser.parse_args()
    if args.trials < 1 or args.repeats < 1:
        parser.error("--trials and --repeats must be >= 1")
    sides = [s for s in args.sides.split(",") if s]
    if unknown := set(sides) - set(SIDES):
        parser.error(f"unknown sides {sorted(unknown)}; accepted: {', '.join(SIDES)}")
    print(host_header(), flush=True)
    print(f"profile {args.study} [{args.distribution}] s={args.scaling_factor} "
          f"p={args.participation}; {args.trials} trial(s) per process", flush=True)
    payload = ["--study", args.study, "--distribution", args.distribution, "--scaling-factor",
               str(args.scaling_factor), "--participation", str(args.participation),
               "--trials", str(args.trials)]
    walls: dict[str, list[float]] = {side: [] for side in sides}
    for repeat in range(args.repeats):
        for side in order(repeat, sides):
            out = run_side(side, "trial", payload)
            _show(side, repeat, out)
            walls[side].append(out["trials"][-1]["wall_s"])
    wall = {side: median(values) for side, values in walls.items()}
    print("trial wall time (median, last trial of each process): "
          + ", ".join(f"{side} {wall[side]:.1f} s" for side in sides))
    if "bf16" in wall and "fp32" in wall:
        print(f"bf16 vs fp32 (same code): {wall['fp32'] / wall['bf16']:.2f}x faster (goal >= 2.5x)")
    if "bf16" in wall and "previous" in wall:
        print(f"bf16 vs previous release: {wall['previous'] / wall['bf16']:.2f}x faster")


if __name__ == "__main__":
    main()
