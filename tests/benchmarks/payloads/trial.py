"""Payload: run whole trials of a study profile in this process; print timings as JSON."""

from __future__ import annotations

import argparse
import json
import time

from optimizer.study.studyfile import load_study_file
from trainer.contract import TrialSpec
from trainer.trial import run_trial

parser = argparse.ArgumentParser()
parser.add_argument("--study", default="studies/quickstart.toml")
parser.add_argument("--distribution", default="iid")
parser.add_argument("--scaling-factor", type=float, default=1.0)
parser.add_argument("--participation", type=float, default=0.5)
parser.add_argument("--trials", type=int, default=1)
parser.add_argument("--dtype")  # this tree only
args = parser.parse_args()
cfg = load_study_file(args.study)
params = cfg.base_params(cfg.distribution(args.distribution)) | {
    "scaling_factor": args.scaling_factor, "participation": args.participation}
if args.dtype:
    params["dtype"] = args.dtype
spec = TrialSpec.from_dict(params)
trials = []
for _ in range(args.trials):
    start = time.perf_counter()
    result = run_trial(spec, progress=False)
    trials.append({"wall_s": time.perf_counter() - start, "timings": dict(result.timings),
                   "pass_at_k": result.pass_at_k, "stderr": result.stderr,
                   "correct": list(result.correct), "n": result.n, "k": result.k})
print(json.dumps({"trials": trials}))
