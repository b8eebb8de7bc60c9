"""``scalefed train``: one federated LoRA trial on this machine, then HumanEval pass@k.

Every field of :class:`trainer.contract.TrialSpec` is a flag (``--scaling-factor``,
``--participation``, ...), generated from the dataclass so the CLI, the gRPC
request and the study files can never drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from trainer.contract import TrialEvent, TrialSpec

EPILOG = """\
examples:
  scalefed train --model tiny-random --problems 2 --samples 2 --k 2 --client-steps 8 --out run.json
  scalefed train --distribution dirichlet --alpha 0.1 --scaling-factor 2 --participation 0.3
  scalefed train --rounds 5 --clients 10 --participation 0.5 --out run.json

--rounds N selects the rounds budget and --client-steps N the compute-matched one
(a fixed total of local steps: higher participation buys fewer rounds).
"""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="run one federated LoRA trial and score it on HumanEval",
        description=__doc__.split("\n\n")[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = TrialSpec()
    for f in dataclasses.fields(TrialSpec):
        default = getattr(defaults, f.name)
        kind = type(default) if not isinstance(default, bool) else str
        p.add_argument(_flag(f.name), dest=f.name, type=kind, default=None,
                       help=f"{f.metadata.get('help', '')} (default: {default})")
    p.add_argument("--out", type=Path, help="write the run record (JSON) here")
    p.add_argument("--quiet", action="store_true", help="no per-round lines or progress bars")
    p.set_defaults(func=run)


def spec_from_args(args: argparse.Namespace) -> TrialSpec:
    """A TrialSpec from the flags that were given; --rounds/--client-steps pick the budget mode."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrialSpec)
             if getattr(args, f.name, None) is not None}
    if "budget_mode" not in given:
        if "rounds" in given and "client_steps" in given:
            from trainer.errors import ConfigError

            raise ConfigError("--rounds", "give either --rounds or --client-steps, not both",
                              accepted="one budget: --rounds N or --client-steps N")
        if "rounds" in given:
            given["budget_mode"] = "rounds"
        elif "client_steps" in given:
            given["budget_mode"] = "client_steps"
    return TrialSpec.from_dict(given)


def _print_event(event: TrialEvent) -> None:
    from trainer.contract import RoundEvent

    if isinstance(event, RoundEvent):
        extra = "" if event.intermediate is None else f"  heldout_loss {event.intermediate:.4f}"
        print(f"round {event.round}/{event.total_rounds}  clients {list(event.clients)}  "
              f"loss {event.train_loss:.4f}  |update| {event.update_norm:.4g}  "
              f"{event.seconds:.1f}s{extra}", file=sys.stderr, flush=True)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temp file and rename, so a crash never leaves half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    from trainer.trial import run_trial

    spec = spec_from_args(args)
    print("trial parameters: " + json.dumps(spec.to_dict()), file=sys.stderr)
    result = run_trial(spec, on_event=None if args.quiet else _print_event,
                       progress=not args.quiet)
    print(f"pass@1  = {result.pass_at_1:.3f} ± {result.stderr_at_1:.3f}")
    print(f"pass@{result.k} = {result.pass_at_k:.3f} ± {result.stderr:.3f}   "
          f"({len(result.problems)} problems, n={result.n}, "
          f"{result.timings['total_s']:.1f}s total)")
    if args.out:
        write_json_atomic(args.out, dict(result.record))
        print(f"run record written to {args.out}")
    return 0
