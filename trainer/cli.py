"""The ``scalefed`` command line. Sub-commands live in small modules that register themselves.

Start-up stays light: no module imported here may import torch at import time.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from trainer import __version__
from trainer.errors import ScalefedError

# Each module exposes ``register(subparsers)`` which adds its sub-command(s) and
# sets ``func`` (taking the parsed args, returning an exit code) as the default.
_COMMAND_MODULES = (
    "trainer.cli_eval",
    "trainer.cli_train",
    "trainer.cli_trainer",
    "optimizer.cli",
)


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
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency, not a not-yet-built command
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
