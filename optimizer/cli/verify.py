"""``scalefed study verify|calibrate``: the replicate experiments around a study.

``verify`` re-runs the answer against FedAvg with fresh seed pairs and stores the
paired lift in the study; ``calibrate`` measures, before a budget is spent, whether
a profile's effects stand out of its replicate noise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from optimizer.study.backends import BACKEND_KINDS, SyntheticBackend

Setup = Callable[[argparse.ArgumentParser], None]


def register_actions(sub: Any, *, common: Setup, load: Callable[[argparse.Namespace], Any]) -> None:
    """Add ``verify`` and ``calibrate`` under ``scalefed study``."""
    actions = [
        ("verify", ("re-run the predicted optimum and FedAvg (s = 1 at the same p) under fresh "
                   "seed pairs; store and print the paired lift with its 95% CI"), _verify),
        ("calibrate", ("replicates at s = 1 plus the corners of the space: replicate noise SD, "
                      "effect range, their ratio (SNR) and what the stop rule will need. "
                      "Runs are stored in the study as they end (a rerun adds only missing "
                      "replicates); a study not yet in the storage is created with its "
                      "start-up design queued, so a later `study run` joins it"),
         _calibrate),
    ]
    for name, text, func in actions:
        p = sub.add_parser(name, help=text, description=text)
        common(p)
        p.add_argument("--replicates", type=int, default=3, metavar="R",
                       help="seed pairs (default %(default)s; >= 2)")
        p.add_argument("--backend", choices=BACKEND_KINDS, default="inprocess",
                       help="where the runs go (as for `study run`) [default: inprocess]")
        p.add_argument("--distribution", action="append", metavar="LABEL",
                       help="only this distribution; repeatable")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=lambda a, f=func: f(a, load(a)))


def _targets(args: argparse.Namespace, cfg: Any) -> tuple[list[Any], Any]:
    from optimizer.study.manager import backends_for

    synthetic = SyntheticBackend() if args.backend == "synthetic" else None
    backend = backends_for(cfg, args.backend, synthetic=synthetic)[0]
    labels = args.distribution or [d.label for d in cfg.distributions]
    return [cfg.distribution(label) for label in labels], backend


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _verify(args: argparse.Namespace, cfg: Any) -> int:
    from optimizer.study.verify import verify

    dists, backend = _targets(args, cfg)
    out = {}
    for dist in dists:
        lift = verify(cfg, dist, backend, replicates=args.replicates, progress=_say)
        out[dist.label] = lift
        if not args.json:
            p = lift.optimum.get("participation")
            at = f" at p={p:.2f}" if isinstance(p, float) else ""
            print(f"{dist.label}: lift over FedAvg{at}: {lift.describe()}  "
                  f"optimum {[round(v, 3) for v in lift.optimum_values]}, "
                  f"FedAvg {[round(v, 3) for v in lift.baseline_values]}")
    if args.json:
        print(json.dumps({k: {**vars(v), "replicates": v.replicates} for k, v in out.items()},
                         indent=2, default=str))
    return 0


def _calibrate(args: argparse.Namespace, cfg: Any) -> int:
    from optimizer.study.verify import calibrate

    dists, backend = _targets(args, cfg)
    out = {}
    for dist in dists:
        cal = calibrate(cfg, dist, backend, replicates=args.replicates, progress=_say)
        out[dist.label] = cal
        if not args.json:
            print(f"{dist.label}: replicate noise SD {cal.noise_sd:.3f} "
                  f"(values {[round(v, 3) for v in cal.replicate_values]}), effect range "
                  f"{cal.effect_range:.3f}, SNR {cal.snr:.2f} (>= {cal.snr_lower:.2f} at 90% "
                  f"confidence). {cal.verdict()}")
            for point, value in cal.spread:
                shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in point.items())
                print(f"  spread {shown}: {value:.3f}")
    if args.json:
        print(json.dumps({k: {**vars(v), "snr": v.snr, "snr_lower": v.snr_lower,
                              "noise_sd_upper": v.noise_sd_upper, "verdict": v.verdict()}
                          for k, v in out.items()}, indent=2, default=str))
    return 0
