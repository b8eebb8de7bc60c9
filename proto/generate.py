#!/usr/bin/env python
"""Generate the committed protobuf/gRPC Python code from every .proto under proto/.

    python proto/generate.py           # regenerate the generated packages
    python proto/generate.py --check   # exit 1 if any committed file is stale (CI)

Each service's generated code lives beside the service that owns it:
``scalefed/v1/optimizer.proto`` -> ``optimizer/service/api/``, everything else
(the trainer service and the shared ``common.proto``) -> ``trainer/service/api/``.
protoc emits absolute imports such as ``from scalefed.v1 import common_pb2``; a
top-level ``scalefed`` package must never exist, so every reference to a
generated module is rewritten to its home package. The rewrite is a pure text
transform, so the output is deterministic and ``--check`` compares byte for byte.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
from pathlib import Path

GRPC_TOOLS_VERSION = "1.85.1"
ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
DEFAULT_PACKAGE = "trainer.service.api"
# proto stem -> the Python package that owns its generated modules
OWNERS = {"optimizer": "optimizer.service.api"}
_INIT_TEXT = '"""Generated protobuf/gRPC code (proto/generate.py). Do not edit."""\n'


def _check_grpc_tools() -> None:
    from grpc_tools import grpc_version

    if grpc_version.VERSION != GRPC_TOOLS_VERSION:
        sys.exit(
            f"generate: grpcio-tools {grpc_version.VERSION} is installed, the generated code is "
            f"pinned to {GRPC_TOOLS_VERSION}: pip install grpcio-tools=={GRPC_TOOLS_VERSION}"
        )


def _proto_files() -> list[Path]:
    files = sorted(PROTO_DIR.rglob("*.proto"))
    if not files:
        sys.exit(f"generate: no .proto files under {PROTO_DIR}")
    return files


def _run_protoc(files: list[Path], out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(f.relative_to(PROTO_DIR)) for f in files),
    ]
    if protoc.main(args) != 0:
        sys.exit("generate: protoc failed (see the messages above)")


def _owner(module: str) -> str:
    """The package a generated module (protoc's dotted name) belongs to."""
    stem = module.rsplit(".", 1)[-1].split("_pb2")[0]
    return OWNERS.get(stem, DEFAULT_PACKAGE)


def _homes(raw: Path) -> dict[str, str]:
    """protoc's dotted module name -> its new home, for every generated module."""
    names = {".".join(p.relative_to(raw).with_suffix("").parts) for p in raw.rglob("*.py")}
    return {name: f"{_owner(name)}.{name.rsplit('.', 1)[-1]}" for name in names}


def _rewrite(text: str, homes: dict[str, str]) -> str:
    """Point every reference to a generated module at its home package."""

    def from_import(m: re.Match[str]) -> str:
        full = f"{m.group(2)}.{m.group(3)}"
        if full in homes:
            package, name = homes[full].rsplit(".", 1)
            return f"{m.group(1)}from {package} import {name}"
        return m.group(0)

    def plain_import(m: re.Match[str]) -> str:
        if m.group(2) in homes:
            alias = m.group(3) or m.group(2).split(".")[-1]
            return f"{m.group(1)}import {homes[m.group(2)]} as {alias}"
        return m.group(0)

    def module_literal(m: re.Match[str]) -> str:
        if m.group(2) in homes:
            return f"{m.group(1)}'{homes[m.group(2)]}'"
        return m.group(0)

    text = re.sub(r"^(\s*)from ([\w.]+) import (\w+)", from_import, text, flags=re.MULTILINE)
    text = re.sub(r"^(\s*)import ([\w.]+)(?: as (\w+))?$", plain_import, text, flags=re.MULTILINE)
    # The module name protoc bakes into each message class's __module__.
    return re.sub(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, )'([\w.]+)'", module_literal, text)


def generate() -> dict[str, str]:
    """Compile every .proto; return {path relative to the repository root: file text}."""
    files = _proto_files()
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as raw_dir:
        raw = Path(raw_dir)
        _run_protoc(files, raw)
        homes = _homes(raw)
        for src in sorted(raw.rglob("*")):
            if not src.is_file() or src.suffix not in (".py", ".pyi"):
                continue
            dotted = ".".join(src.relative_to(raw).with_suffix("").parts)
            package = homes[dotted].rsplit(".", 1)[0] if dotted in homes else \
                _owner(dotted)  # .pyi stubs share their module's name
            path = Path(*package.split("."), src.name)
            out[str(path)] = _rewrite(src.read_text(), homes)
    for package in {DEFAULT_PACKAGE, *OWNERS.values()}:
        out[str(Path(*package.split("."), "__init__.py"))] = _INIT_TEXT
    return out


def _committed() -> dict[str, str]:
    found: dict[str, str] = {}
    for package in {DEFAULT_PACKAGE, *OWNERS.values()}:
        folder = ROOT.joinpath(*package.split("."))
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if p.is_file() and p.suffix in (".py", ".pyi"):
                    found[str(p.relative_to(ROOT))] = p.read_text()
    return found


def check() -> int:
    """Regenerate in memory and compare with the committed files."""
    fresh, committed = generate(), _committed()
    problems: list[str] = []
    for name in sorted(set(fresh) | set(committed)):
        if name not in committed:
            problems.append(f"  missing: {name}")
        elif name not in fresh:
            problems.append(f"  not generated by any .proto (remove it): {name}")
        elif fresh[name] != committed[name]:
            diff = list(difflib.unified_diff(committed[name].splitlines(), fresh[name].splitlines(),
                                             lineterm="", n=0))
            changed = sum(1 for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---"))
            problems.append(f"  stale: {name} ({changed} lines differ)")
            problems.extend(f"      {line}" for line in diff[2:8])
    if problems:
        print("generate --check: generated code is stale; run `python proto/generate.py`:")
        print("\n".join(problems))
        return 1
    print(f"generate --check: generated code is up to date ({len(fresh)} files)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 with a diff summary if the committed code is stale")
    args = parser.parse_args(argv)
    _check_grpc_tools()
    if args.check:
        return check()
    fresh = generate()
    for name in _committed():
        if name not in fresh:
            (ROOT / name).unlink()  # a removed .proto must not leave its modules behind
    for name, text in fresh.items():
        target = ROOT / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    print(f"generate: wrote {len(fresh)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
