"""Benchmark: trials needed to get within epsilon of the optimum, GP vs TPE vs random.

For each sampler and seed, run ask/tell on the known-optimum synthetic trainer
(binomial noise, quickstart-sized evaluation: 40 problems, n = 10) and record the
first trial number after which the *recommended* point is within epsilon: for the
GP study that is the surrogate's predicted optimum (``optimizer.science.answer``), for TPE
and random the best observed trial (what a user of those samplers would report).
"Within epsilon" = the true expected pass@10 at the recommendation is within
``EPS`` of the true maximum. Median over 20 seeds, printed as ratios to random
sampling measured in the same run (goal: GP <= 0.5x random).

Run:  python tests/benchmarks/bench_sampler.py [--seeds 20] [--budget 40]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import optuna

from optimizer.science import space as space_mod
from optimizer.science.answer import Observation, compute_answer
from optimizer.science.synthetic import Landscape, default_optimum, simulate
from optimizer.study.studyfile import ParamSpec

SPACE = (ParamSpec(name="scaling_factor", low=0.25, high=4.0, log=True),
         ParamSpec(name="participation", low=0.1, high=1.0))
EPS = 0.03
N_PROBLEMS, N_SAMPLES, K = 40, 10, 10
STARTUP = 5


def _samplers(seed: int) -> dict[str, Callable[[], optuna.samplers.BaseSampler]]:
    return {
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed, n_startup_trials=STARTUP,
                                                warn_independent_sampling=False),
    }


def trials_to_epsilon(name: str, seed: int, budget: int, land: Landscape, truth_max: float,
                      check_every: int) -> int:
    sampler = _samplers(seed)[name]()
    study = optuna.create_study(direction="maximize", sampler=sampler)
    if name == "gp":  # the runner's start-up: a scrambled Sobol design
        for p in space_mod.design_points(SPACE, STARTUP, seed=seed):
            study.enqueue_trial(p)
    dists = space_mod.to_distributions(SPACE)
    rng = np.random.default_rng(seed)
    obs: list[Observation] = []
    for i in range(budget):
        trial = study.ask(dists)
        s, p = trial.params["scaling_factor"], trial.params["participation"]
        v, se, _ = simulate(land, s, p, n=N_SAMPLES, k=K, n_problems=N_PROBLEMS, problem_seed=seed,
                            rng=rng)
        study.tell(trial, v)
        obs.append(Observation(number=i, params=trial.params, value=v, stderr=se))
        if i + 1 < STARTUP or (i + 1) % check_every:
            continue
        if name == "gp":
            ans = compute_answer(SPACE, obs, seed=seed)
            rec = ans.predicted.params if ans.predicted else obs[-1].params
        else:
            rec = max(obs, key=lambda o: o.value).params
        true = land.expected_pass_at_k(rec["scaling_factor"], rec["participation"], k=K,
                                       n_problems=N_PROBLEMS, problem_seed=seed)
        if truth_max - true <= EPS:
            return i + 1
    return budget + 1  # censored: not reached within the budget


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--check-every", type=int, default=1)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    s_star, p_star = default_optimum("dirichlet", 0.1)
    land = Landscape(optimum_s=s_star, optimum_p=p_star)
    results: dict[str, list[int]] = {"random": [], "tpe": [], "gp": []}
    started = time.perf_counter()
    for seed in range(args.seeds):
        grid = space_mod.candidates(SPACE, per_axis=81)
        truth_max = max(land.expected_pass_at_k(g["scaling_factor"], g["participation"], k=K,
                                                n_problems=N_PROBLEMS, problem_seed=seed)
                        for g in grid)
        for name, vals in results.items():
            vals.append(trials_to_epsilon(name, seed, args.budget, land, truth_max,
                                                    args.check_every))
        print(f"seed {seed}: " + ", ".join(f"{k}={v[-1]}" for k, v in results.items()),
              flush=True)
    base = statistics.median(results["random"])
    print(f"\ntrials to within {EPS} pass@10 of the optimum (median of {args.seeds} seeds; "
          f"budget {args.budget}, >{args.budget} = not reached), {time.perf_counter() - started:.0f} s")
    for name, vals in results.items():
        med = statistics.median(vals)
        print(f"  {name:6s} median {med:5.1f}  ratio to random {med / base:.2f}x  "
              f"not reached {sum(v > args.budget for v in vals)}/{args.seeds}")


if __name__ == "__main__":
    main()
