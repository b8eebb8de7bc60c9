"""Benchmark: one surrogate shared across distributions against independent studies.

Full studies through the real runner (SQLite on tmpfs, start-up design, the study's
sampler) against the synthetic trainer with CRN noise at the CPU profile (40
problems, n = 10, as ``bench_answer.py``). Each trial's split is a real partition of
the synthetic data set, its heterogeneity h (mean TV distance) places the true
optimum ``optimum_at(h)`` (s* from 2.0 at iid to 0.5 at dirichlet(0.1)), so the
optimum moves smoothly with h. Studied: iid, dirichlet(1), dirichlet(0.1); held out
(never run): dirichlet(0.3).

* independent: one study per distribution, ``--n-trials`` each (sampler
  ``--independent-kind``, the study-file default ``optuna-gp``);
* shared: ``[sampler] surrogate = "shared"``, ``--shared-trials`` each (0.6x the
  total by default), run in turns of a few trials per distribution (``study
  resume --n-trials``) so that every distribution learns from the others.

Accuracy of a distribution's answer: |ln(s_hat / s*)| <= ln 1.5 and |p_hat - p*| <=
0.2. The held-out label is answered by ``distribution_status`` as a prediction at the
h of its split; its s* must be within x/÷ 1.5.

Run:  python tests/benchmarks/bench_shared.py --seeds 20 [--n-trials 15]
      [--shared-trials 9] [--workers 2]
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
from statistics import median
from typing import Any

from optimizer.science.synthetic import optimum_at
from optimizer.study.backends import SyntheticBackend
from optimizer.study.heterogeneity import synthetic_heterogeneity
from optimizer.study.manager import distribution_status, run_study
from optimizer.study.shared import parse_label
from optimizer.study.studyfile import StudyConfig, parse_study

STUDIED = [{"kind": "iid"}, {"kind": "dirichlet", "alpha": 1.0},
           {"kind": "dirichlet", "alpha": 0.1}]
HELD_OUT = "dirichlet-0.3"
S_BOUND, P_BOUND = math.log(1.5), 0.2


def study_config(folder: str, seed: int, mode: str, *, n_trials: int, startup: int,
                 kind: str, problems: str, samples: int) -> StudyConfig:
    return parse_study({
        "name": f"{mode}{seed}", "seed": seed, "n_trials": n_trials,
        "storage": f"sqlite:///{folder}/{mode}{seed}.db", "distributions": STUDIED,
        "space": {"scaling_factor": {"low": 0.25, "high": 4.0, "log": True},
                  "participation": {"low": 0.1, "high": 1.0}},
        "profile": {"model": "tiny-random", "problems": problems, "samples": samples,
                    "clients": 10},
        "sampler": {"n_startup_trials": startup, "kind": kind,
                    "surrogate": "shared" if mode == "shared" else "independent"},
        "stop": {"enabled": False},
    })


def truth(cfg: StudyConfig, label: str) -> tuple[float, float]:
    """The synthetic trainer's optimum for ``label``: placed by the h of its split."""
    return optimum_at(synthetic_heterogeneity(cfg.base_params(parse_label(label))))


def score(cfg: StudyConfig, label: str) -> dict[str, Any]:
    st = distribution_status(cfg, label)
    assert st.answer is not None and st.answer.predicted is not None
    s_hat = float(st.answer.predicted.params["scaling_factor"])
    p_hat = float(st.answer.predicted.params["participation"])
    s_true, p_true = truth(cfg, label)
    err = abs(math.log(s_hat / s_true))
    return {"label": label, "log_s_err": err, "s_ok": err <= S_BOUND, "s_hat": s_hat,
            "p_hat": p_hat, "s_true": s_true, "p_true": p_true,
            "ok": err <= S_BOUND and abs(p_hat - p_true) <= P_BOUND,
            "trials": st.answer.n_complete, "predicted": st.predicted}


def one_seed(args: tuple[str, int, argparse.Namespace]) -> dict[str, list[dict[str, Any]]]:
    """Both modes for one seed (runs in a worker process)."""
    folder, seed, opts = args
    common = {"problems": opts.problems, "samples": opts.samples}
    indep = study_config(folder, seed, "independent", n_trials=opts.n_trials,
                         startup=opts.startup, kind=opts.independent_kind, **common)
    run_study(indep, [SyntheticBackend()], resume=False)
    shared = study_config(folder, seed, "shared", n_trials=opts.shared_trials,
                          startup=opts.shared_startup, kind="surrogate", **common)
    budget = opts.shared_startup
    run_study(shared, [SyntheticBackend()], resume=False, n_trials=budget)
    while budget < opts.shared_trials:  # turns: every distribution sees the others' news
        budget = min(budget + opts.turn, opts.shared_trials)
        run_study(shared, [SyntheticBackend()], resume=True, n_trials=budget)
    labels = [d.label for d in indep.distributions]
    return {"independent": [{**score(indep, label), "seed": seed}
                            for label in [*labels, HELD_OUT]],
            "shared": [{**score(shared, label), "seed": seed} for label in [*labels, HELD_OUT]]}


def summary(name: str, rows: list[dict[str, Any]], n_seeds: int) -> None:
    studied = [r for r in rows if not r["predicted"]]
    held = [r for r in rows if r["predicted"]]
    total = sum(r["trials"] for r in studied) / n_seeds
    print(f"{name}: {total:.0f} trials per seed over {len(STUDIED)} distributions; "
          f"within the bound {sum(r['ok'] for r in studied)}/{len(studied)}, s within "
          f"x/÷1.5 {sum(r['s_ok'] for r in studied)}/{len(studied)}, median |ln s err| "
          f"{median(r['log_s_err'] for r in studied):.3f}")
    for label in sorted({r["label"] for r in studied}):
        mine = [r for r in studied if r["label"] == label]
        print(f"  {label}: within the bound {sum(r['ok'] for r in mine)}/{len(mine)}, "
              f"median |ln s err| {median(r['log_s_err'] for r in mine):.3f}")
    print(f"  held-out {HELD_OUT} (never run), s* within x/÷1.5: "
          f"{sum(r['s_ok'] for r in held)}/{len(held)} seeds, median |ln s err| "
          f"{median(r['log_s_err'] for r in held):.3f}")
    for r in rows:  # what a miss looks like: the estimate against the truth
        if not (r["s_ok"] if r["predicted"] else r["ok"]):
            print(f"    miss: seed {r['seed']} {r['label']}: s_hat {r['s_hat']:.3f} (s* "
                  f"{r['s_true']:.3f}), p_hat {r['p_hat']:.3f} (p* {r['p_true']:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--n-trials", type=int, default=15, help="per distribution, independent")
    ap.add_argument("--startup", type=int, default=5, help="start-up design, independent")
    ap.add_argument("--independent-kind", default="optuna-gp", choices=("optuna-gp", "surrogate"))
    ap.add_argument("--shared-trials", type=int, default=9, help="per distribution, shared")
    ap.add_argument("--shared-startup", type=int, default=3, help="start-up design, shared")
    ap.add_argument("--turn", type=int, default=2, help="shared: trials per distribution a turn")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--problems", default="40")
    ap.add_argument("--samples", type=int, default=10)
    opts = ap.parse_args()
    started = time.monotonic()
    shm = Path("/dev/shm")
    folder = tempfile.mkdtemp(dir=shm if shm.is_dir() else None)
    try:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=opts.workers, mp_context=ctx) as pool:
            results = list(pool.map(one_seed, [(folder, s, opts) for s in range(opts.seeds)]))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{opts.seeds} seeds, {opts.problems} problems, n = {opts.samples}; bound: "
          f"|ln(s_hat/s*)| <= ln 1.5 and |p_hat - p*| <= {P_BOUND}")
    for mode in ("independent", "shared"):
        summary(f"{mode} ({opts.independent_kind if mode == 'independent' else 'surrogate'})",
                [r for res in results for r in res[mode]], opts.seeds)
    ratio = opts.shared_trials / opts.n_trials
    print(f"shared / independent total trials: {ratio:.2f}")
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
