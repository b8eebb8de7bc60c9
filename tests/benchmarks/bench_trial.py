"""Wall time of one trial of a study's profile, split into its phases, against a goal.

    python tests/benchmarks/bench_trial.py                       # quickstart profile, iid, s=1, p=0.5
    python tests/benchmarks/bench_trial.py --trials 2            # + a trial as a running study sees it
    python tests/benchmarks/bench_trial.py --study studies/quickstart.toml --distribution dirichlet-0.1

The phases say what limits a trial: model load (once per worker), corpus and
partition, federated training, generation and sandboxed execution. With
``--trials 2`` the second trial runs in the same process, as a study's later
trials do: the model stays loaded (the trainer's model pool) and the corpus and
partition come from their caches.

Two-core machines differ by well over 1.5x in what they do per second, so the
first line measures the host: fp32 GEMM throughput at the training step's MLP
shape, at the thread count trials use. Compare trial times across machines
only together with it.
"""

from __future__ import annotations

import argparse
import time

from optimizer.study.studyfile import load_study_file
from trainer.contract import TrialSpec
from trainer.trial import run_trial

PHASES = ("load_s", "train.corpus_s", "train.tokenize_s", "train.partition_s",
          "train.setup_s", "train.train_s", "generate_s", "execute_s")


def host_gflops(*, seconds: float = 2.0) -> tuple[float, int]:
    """fp32 GEMM GFLOP/s of this host at the trial's thread count: (352x576) @ (576x1536),
    a packed training row through an MLP projection of SmolLM2-135M."""
    import torch

    from trainer.threads import configure_threads

    threads = configure_threads()
    a, b = torch.randn(352, 576), torch.randn(576, 1536)
    for _ in range(5):
        a @ b
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        a @ b
        runs += 1
    return 2 * 352 * 576 * 1536 * runs / elapsed / 1e9, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default="studies/quickstart.toml")
    parser.add_argument("--distribution", default="iid", help="a label of the study file")
    parser.add_argument("--scaling-factor", type=float, default=1.0)
    parser.add_argument("--participation", type=float, default=0.5)
    parser.add_argument("--goal", type=float, default=120.0, help="seconds (default 120)")
    parser.add_argument("--trials", type=int, default=1,
                        help="trials run one after another in this process (default 1); "
                             "from the second on, the model is already loaded, as in a study")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error(f"--trials must be >= 1, got {args.trials}")
    cfg = load_study_file(args.study)
    params = cfg.base_params(cfg.distribution(args.distribution)) | {
        "scaling_factor": args.scaling_factor, "participation": args.participation}
    spec = TrialSpec.from_dict(params)
    gflops, threads = host_gflops()
    print(f"host: fp32 GEMM {gflops:.1f} GFLOP/s at {threads} threads "
          "(352x576 @ 576x1536, the training step's MLP shape)")
    print(f"profile {args.study} [{args.distribution}] s={spec.scaling_factor} "
          f"p={spec.participation}: {spec.client_steps} client steps")
    for number in range(1, args.trials + 1):
        start = time.perf_counter()
        result = run_trial(spec, progress=False)
        wall = time.perf_counter() - start
        t = result.timings
        print(f"trial {number}{' (model already loaded)' if number > 1 else ''}: "
              f"{len(result.problems)} problems x n={result.n}")
        for key in PHASES:
            if key in t:
                print(f"  {key:<18} {t[key]:7.1f}s  ({t[key] / wall:5.1%})")
        print(f"  {'total':<18} {wall:7.1f}s   pass@{result.k} = {result.pass_at_k:.3f} ± "
              f"{result.stderr:.3f}")
        print(f"trial time / goal ({args.goal:.0f}s): {wall / args.goal:.2f}x")


if __name__ == "__main__":
    main()
