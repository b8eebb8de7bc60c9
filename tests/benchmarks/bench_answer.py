"""Benchmark: is the study's answer right, and does the stop rule end studies early?

Full studies through the real runner (SQLite on tmpfs, start-up design, the
study's sampler, the stop rule) against the synthetic trainer with CRN-correlated
noise, two distributions with off-centre optima (iid: s* = 2.8, p* = 0.25;
dirichlet(0.1): s* = 0.35, p* = 0.75). Per seed and distribution it records:

* whether the 90% region of the argmax contains the true s* (and p*);
* whether the study ended by the stop rule before ``n_trials``;
* the accuracy bound |ln(s_hat / s*)| <= 0.5 and |p_hat - p*| <= 0.2 for the GP's
  optimum, the observed best trial and a constant guess (s = 1, p = 0.55);
* the true gap at the GP's optimum (the true maximum of expected pass@10 less its value
  there), against the stop rule's epsilon: what "within epsilon of the best" promised.

Run:  python tests/benchmarks/bench_answer.py [--seeds 20] [--n-trials 30] [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from optimizer.science import space as space_mod
from optimizer.science.synthetic import Landscape
from optimizer.study.backends import SyntheticBackend, problem_ids
from optimizer.study.manager import distribution_status, run_study
from optimizer.study.studyfile import StudyConfig, parse_study

TRUTH = {"iid": (2.8, 0.25), "dirichlet-0.1": (0.35, 0.75)}
CONSTANT = {"scaling_factor": 1.0, "participation": 0.55}
LOG_S_BOUND, P_BOUND = 0.5, 0.2
EPSILON = 0.02  # the stop rule's, in study_config


def study_config(folder: str, seed: int, *, n_trials: int, problems: str = "40",
                 samples: int = 10, sampler: str = "surrogate") -> StudyConfig:
    return parse_study({
        "name": f"acc{seed}", "seed": seed, "n_trials": n_trials,
        "storage": f"sqlite:///{folder}/acc{seed}.db",
        "distributions": [{"kind": "iid"}, {"kind": "dirichlet", "alpha": 0.1}],
        "space": {"scaling_factor": {"low": 0.25, "high": 4.0, "log": True},
                  "participation": {"low": 0.1, "high": 1.0}},
        "profile": {"model": "tiny-random", "problems": problems, "samples": samples,
                    "clients": 10},
        "sampler": {"n_startup_trials": 5, "kind": sampler},
        "stop": {"enabled": True, "min_trials": 8, "epsilon": EPSILON, "probability": 0.9},
    })


def within(params: dict[str, Any], truth: tuple[float, float]) -> bool:
    return (abs(math.log(params["scaling_factor"] / truth[0])) <= LOG_S_BOUND
            and abs(params["participation"] - truth[1]) <= P_BOUND)


def true_gap(land: Landscape, params: dict[str, Any], n_problems: int,
             cfg: StudyConfig) -> float:
    """True max of expected pass@10 over a fine grid, less its value at ``params``."""
    def truth(s: float, p: float) -> float:
        return land.expected_pass_at_k(s, p, k=10, n_problems=n_problems, problem_seed=0)

    grid = space_mod.candidates(cfg.space, per_axis=81)
    best = max(truth(g["scaling_factor"], g["participation"]) for g in grid)
    return best - truth(params["scaling_factor"], params["participation"])


def one_seed(args: tuple[str, int, int, str, int, str]) -> list[dict[str, Any]]:
    """One seed's study, both distributions (runs in a worker process)."""
    folder, seed, n_trials, problems, samples, sampler = args
    cfg = study_config(folder, seed, n_trials=n_trials, problems=problems, samples=samples,
                       sampler=sampler)
    lands = {k: Landscape(optimum_s=s, optimum_p=p) for k, (s, p) in TRUTH.items()}
    backend = SyntheticBackend(landscapes=lands)
    outcomes = run_study(cfg, [backend], resume=False)
    rows = []
    for outcome, dist in zip(outcomes, cfg.distributions, strict=True):
        ans = distribution_status(cfg, dist.label).answer
        assert ans is not None and ans.predicted is not None and ans.observed_best is not None
        assert ans.argmax_region is not None
        truth, box = TRUTH[dist.label], ans.argmax_region.bounds
        rows.append({
            "seed": seed, "label": dist.label, "n": outcome.n_complete, "ended": outcome.ended,
            "s_in_region": box["scaling_factor"][0] <= truth[0] <= box["scaling_factor"][1],
            "p_in_region": box["participation"][0] <= truth[1] <= box["participation"][1],
            "gp": within(dict(ans.predicted.params), truth),
            "observed": within(dict(ans.observed_best.params), truth),
            "constant": within(CONSTANT, truth),
            "gap": true_gap(lands[dist.label], dict(ans.predicted.params),
                            len(problem_ids(problems)), cfg),
            "region": ans.argmax_region.describe(),
        })
    return rows


def run(seeds: int, n_trials: int, workers: int, problems: str, samples: int,
        sampler: str) -> list[dict[str, Any]]:
    shm = Path("/dev/shm")
    folder = tempfile.mkdtemp(dir=shm if shm.is_dir() else None)
    try:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            jobs = [(folder, s, n_trials, problems, samples, sampler) for s in range(seeds)]
            return [row for rows in pool.map(one_seed, jobs) for row in rows]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--n-trials", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--problems", default="40")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--sampler", default="surrogate", choices=("surrogate", "optuna-gp"))
    args = ap.parse_args()
    started = time.monotonic()
    rows = run(args.seeds, args.n_trials, args.workers, args.problems, args.samples, args.sampler)
    for label in TRUTH:
        mine = [r for r in rows if r["label"] == label]
        count = len(mine)
        print(f"{label} (s* = {TRUTH[label][0]}, p* = {TRUTH[label][1]}), {count} seeds, "
              f"{args.problems} problems, n = {args.samples}, sampler {args.sampler}:")
        print(f"  90% region contains s*: {sum(r['s_in_region'] for r in mine)}/{count}, "
              f"p*: {sum(r['p_in_region'] for r in mine)}/{count}")
        early = [r for r in mine if r["ended"] == "stop rule"]
        mean_n = sum(r["n"] for r in mine) / count
        print(f"  ended by the stop rule before {args.n_trials}: {len(early)}/{count} "
              f"(mean trials {mean_n:.1f})")
        print(f"  within the bound (|ln s err| <= {LOG_S_BOUND}, |p err| <= {P_BOUND}): "
              f"GP {sum(r['gp'] for r in mine)}/{count}, observed best "
              f"{sum(r['observed'] for r in mine)}/{count}, constant "
              f"{sum(r['constant'] for r in mine)}/{count}")
        gaps = [r["gap"] for r in mine]
        print(f"  true gap at the GP's optimum <= epsilon ({EPSILON}): "
              f"{sum(g <= EPSILON for g in gaps)}/{count} (mean {sum(gaps) / count:.3f}, "
              f"max {max(gaps):.3f}); of studies ended by the stop rule: "
              f"{sum(r['gap'] <= EPSILON for r in early)}/{len(early)}")
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
