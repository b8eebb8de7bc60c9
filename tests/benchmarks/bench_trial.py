"""Wall time of one trial of a study's profile, split into its phases, against a goal.

    python tests/benchmarks/bench_trial.py                       # quickstart profile, iid, s=1, p=0.5
    python tests/benchmarks/bench_trial.py --study studies/quickstart.toml --distribution dirichlet-0.1

The phases say what limits a trial: model load (once per worker), corpus and
partition, federated training, generation and sandboxed execution.
"""

from __future__ import annotations

import argparse
import time

from optimizer.study.studyfile import load_study_file
from trainer.contract import TrialSpec
from trainer.trial import run_trial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default="studies/quickstart.toml")
    parser.add_argument("--distribution", default="iid", help="a label of the study file")
    parser.add_argument("--scaling-factor", type=float, default=1.0)
    parser.add_argument("--participation", type=float, default=0.5)
    parser.add_argument("--goal", type=float, default=120.0, help="seconds (default 120)")
    args = parser.parse_args()
    cfg = load_study_file(args.study)
    params = cfg.base_params(cfg.distribution(args.distribution)) | {
        "scaling_factor": args.scaling_factor, "participation": args.participation}
    spec = TrialSpec.from_dict(params)
    start = time.perf_counter()
    result = run_trial(spec, progress=False)
    wall = time.perf_counter() - start
    t = result.timings
    print(f"profile {args.study} [{args.distribution}] s={spec.scaling_factor} "
          f"p={spec.participation}: {len(result.problems)} problems x n={result.n}, "
          f"{spec.client_steps} client steps")
    for key in ("load_s", "train.corpus_s", "train.tokenize_s", "train.partition_s",
                "train.setup_s", "train.train_s", "generate_s", "execute_s"):
        if key in t:
            print(f"  {key:<18} {t[key]:7.1f}s  ({t[key] / wall:5.1%})")
    print(f"  {'total':<18} {wall:7.1f}s   pass@{result.k} = {result.pass_at_k:.3f} ± "
          f"{result.stderr:.3f}")
    print(f"trial time / goal ({args.goal:.0f}s): {wall / args.goal:.2f}x")


if __name__ == "__main__":
    main()
