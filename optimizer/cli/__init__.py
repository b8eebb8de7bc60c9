"""The ``scalefed`` command line: the root of the import graph.

Sub-commands live in small modules that register themselves: the trainer's
(``eval``, ``train``, ``trainer serve|info|cancel``) and the optimizer's
(``study ...``, ``serve``). Start-up stays light: no module imported here may
import torch at import time; each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from optimizer.cli import study
from trainer import __version__
from trainer.cli import eval as eval_cmd
from trainer.cli import train, worker
from trainer.errors import ScalefedError
from trainer.threads import prefer_passive_wait

# Each module exposes ``register(subparsers)`` which adds its sub-command(s) and
# sets ``func`` (taking the parsed args, returning an exit code) as the default.
_COMMANDS = (eval_cmd, train, worker, study)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scalefed",
        description=(
            "Find the optimal server scaling factor and participation rate for federated "
            "LoRA training of code LLMs, scored by HumanEval pass@10."
        ),
    )
    parser.add_argument("--version", action="version", version=f"scalefed {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    prefer_passive_wait()  # before any command imports torch
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ScalefedError as exc:
        print(f"scalefed: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scalefed: interrupted", file=sys.stderr)
        return 130

