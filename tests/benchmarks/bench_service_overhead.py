"""What the gRPC trainer service costs per trial, against the same trial in-process.

    python tests/benchmarks/bench_service_overhead.py [--repeats 20] [--tiny]

Runs one trial function directly (the baseline) and through a real server on
127.0.0.1 (accept, stream every event, serialise the result), in the same run,
and prints the overhead per trial and the ratio. Workloads:

* ``fake-0``: the fake trial with no work at all (pure service overhead);
* ``fake-100ev``: 100 rounds, no work (per-event streaming cost);
* ``fake-0.2s``: 4 rounds of 50 ms (a short trial);
* ``tiny``: the real trial function on the tiny random model (``--tiny``, needs
  ``trainer.trial``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.trainer.fakes import FakeTrial
from trainer.contract import TrialFunction, TrialSpec
from trainer.service.client import TrainerClient
from trainer.service.server import ServerConfig, create_server
from trainer.service.worker import WorkerPolicy

BASE: dict[str, Any] = {"scaling_factor": 1.0, "participation": 0.5, "budget_mode": "rounds",
                        "model": "tiny-random", "problems": "4"}
TINY: dict[str, Any] = {**BASE, "clients": 2, "rounds": 1, "local_steps": 1, "batch_size": 2,
                        "seq_len": 64, "max_examples": 16, "problems": "2", "samples": 2, "k": 2,
                        "max_new_tokens": 8}


def bench(name: str, trial_fn: TrialFunction, spec: dict[str, Any], repeats: int) -> None:
    domain = TrialSpec(**spec)
    events: list[object] = []
    trial_fn(domain, on_event=events.append)  # warm-up: model load, corpus cache, imports
    local: list[float] = []
    remote: list[float] = []
    server = create_server(ServerConfig(port=0, policy=WorkerPolicy()), trial_fn=trial_fn)
    server.start()
    try:
        with TrainerClient(server.address) as client:
            client.get_info()  # connect outside the timed region, as a long-lived client would
            # Interleaved, so drift in machine load hits both sides alike.
            for _ in range(repeats):
                t0 = time.perf_counter()
                trial_fn(domain, on_event=events.append)
                local.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                client.run_trial(domain, on_event=events.append)
                remote.append(time.perf_counter() - t0)
    finally:
        server.stop(grace=0)
    lm, rm = statistics.median(local), statistics.median(remote)
    print(f"{name:>11}: in-process {lm * 1e3:9.2f} ms | gRPC {rm * 1e3:9.2f} ms | "
          f"overhead {(rm - lm) * 1e3:7.2f} ms/trial | ratio gRPC/in-process {rm / lm:6.3f} "
          f"(median of {repeats})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="also time the real tiny-model trial")
    args = parser.parse_args()
    bench("fake-0", FakeTrial(round_seconds=0.0), {**BASE, "rounds": 1}, args.repeats)
    bench("fake-100ev", FakeTrial(round_seconds=0.0), {**BASE, "rounds": 100}, args.repeats)
    bench("fake-0.2s", FakeTrial(round_seconds=0.05), {**BASE, "rounds": 4}, args.repeats)
    if args.tiny:
        try:
            from trainer.trial import run_trial
        except ImportError as exc:
            print(f"       tiny: skipped, trainer.trial is not available ({exc})")
        else:
            bench("tiny", run_trial, TINY, max(3, args.repeats // 5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
