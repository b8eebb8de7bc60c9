"""Benchmark: trials needed to get within epsilon of the optimum, per sampler.

Every sampler gets the same start (the runner's scrambled Sobol design, enqueued)
and the same recommender (the answer's GP over that sampler's own observations,
with the study's noise model), so only the proposals differ. The synthetic trainer
has CRN-correlated noise at the quickstart's evaluation size (40 problems, n = 10)
and an off-centre optimum (s* = 0.35, p* = 0.75 unless ``--optimum`` moves it, e.g.
``--optimum 2.8,0.25``, the corner-near iid optimum of bench_answer). "Within epsilon" = the true
expected pass@10 at the recommendation is within ``EPS`` of the true maximum.
Median over seeds, printed as ratios to random sampling measured in the same run.

Run:  python tests/benchmarks/bench_sampler.py [--seeds 20] [--budget 30] [--optimum S,P]
      [--samplers random,optuna-gp,surrogate]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from optimizer.science import space as space_mod
from optimizer.science.answer import Observation, compute_answer
from optimizer.science.noise import estimate_noise, per_problem_scores
from optimizer.science.space import ParamSpec
from optimizer.science.synthetic import Landscape, simulate
from optimizer.study.sampler import SurrogateSampler

SPACE = (ParamSpec(name="scaling_factor", low=0.25, high=4.0, log=True),
         ParamSpec(name="participation", low=0.1, high=1.0))
EPS = 0.03
N_PROBLEMS, N_SAMPLES, K = 40, 10, 10
STARTUP = 5


def _samplers(seed: int) -> dict[str, Callable[[], optuna.samplers.BaseSampler]]:
    return {
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP),
        "optuna-gp": lambda: optuna.samplers.GPSampler(seed=seed, n_startup_trials=STARTUP,
                                                       warn_independent_sampling=False),
        "surrogate": lambda: SurrogateSampler(space=SPACE, n_startup_trials=STARTUP, seed=seed,
                                              observations=_noisy_observations),
        "surrogate-ei": lambda: SurrogateSampler(space=SPACE, n_startup_trials=STARTUP,
                                                 seed=seed, observations=_noisy_observations,
                                                 acquisition="ei"),
    }


def _noisy_observations(trials: Sequence[FrozenTrial]) -> list[Observation]:
    """The runner's view: values with the study's noise model from per-problem counts."""
    done = [t for t in trials if t.value is not None and "counts" in t.user_attrs]
    if not done:
        return []
    noise = estimate_noise(per_problem_scores([t.user_attrs["counts"] for t in done],
                                              n=N_SAMPLES, k=K)).trial_sd if len(done) > 1 \
        else float(done[0].user_attrs["stderr"])
    return [Observation(number=t.number, params=t.params, value=float(t.value or 0.0),
                        stderr=noise) for t in done]


def trials_to_epsilon(name: str, seed: int, budget: int, land: Landscape, truth_max: float,
                      check_every: int) -> int:
    sampler = _samplers(seed)[name]()
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for p in space_mod.design_points(SPACE, STARTUP, seed=seed):  # the same start for all
        study.enqueue_trial(p)
    dists = space_mod.to_distributions(SPACE)
    for i in range(budget):
        trial = study.ask(dists)
        s, p = trial.params["scaling_factor"], trial.params["participation"]
        rng = np.random.default_rng([seed, i, 17])
        v, se, counts = simulate(land, s, p, n=N_SAMPLES, k=K, n_problems=N_PROBLEMS,
                                 problem_seed=0, rng=rng, crn_seed=seed)
        trial.set_user_attr("counts", counts)
        trial.set_user_attr("stderr", se)
        study.tell(trial, v)
        if i + 1 < STARTUP or (i + 1) % check_every:
            continue
        # The same recommender for every sampler: the answer's GP on its observations.
        ans = compute_answer(SPACE, _noisy_observations(study.get_trials()), seed=seed,
                             regions=False)
        rec = ans.predicted.params if ans.predicted else trial.params
        true = land.expected_pass_at_k(rec["scaling_factor"], rec["participation"], k=K,
                                       n_problems=N_PROBLEMS, problem_seed=0)
        if truth_max - true <= EPS:
            return i + 1
    return budget + 1  # censored: not reached within the budget


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--check-every", type=int, default=1)
    ap.add_argument("--samplers", help="comma-separated subset (default: all)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--optimum", default="0.35,0.75", help="true s*,p* of the landscape")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    s_star, p_star = (float(v) for v in args.optimum.split(","))
    land = Landscape(optimum_s=s_star, optimum_p=p_star)
    names = args.samplers.split(",") if args.samplers else list(_samplers(0))
    results: dict[str, list[int]] = {name: [] for name in names}
    started = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        grid = space_mod.candidates(SPACE, per_axis=81)
        truth_max = max(land.expected_pass_at_k(g["scaling_factor"], g["participation"], k=K,
                                                n_problems=N_PROBLEMS, problem_seed=0)
                        for g in grid)
        for name, vals in results.items():
            vals.append(trials_to_epsilon(name, seed, args.budget, land, truth_max,
                                                    args.check_every))
        print(f"seed {seed}: " + ", ".join(f"{k}={v[-1]}" for k, v in results.items()),
              flush=True)
    base = statistics.median(results["random"]) if "random" in results else float("nan")
    print(f"\ntrials to within {EPS} pass@10 of the optimum at s*={s_star:g}, p*={p_star:g} "
          f"(median of {args.seeds} seeds; "
          f"budget {args.budget}, >{args.budget} = not reached), {time.perf_counter() - started:.0f} s")
    for name, vals in results.items():
        med = statistics.median(vals)
        print(f"  {name:12s} median {med:5.1f}  mean {statistics.mean(vals):5.2f}  "
              f"ratio to random {med / base:.2f}x  "
              f"not reached {sum(v > args.budget for v in vals)}/{args.seeds}")


if __name__ == "__main__":
    main()
