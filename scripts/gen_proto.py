#!/usr/bin/env python
"""Generate the committed protobuf/gRPC Python code from every .proto under proto/.

    python scripts/gen_proto.py           # regenerate trainer/api/
    python scripts/gen_proto.py --check   # exit 1 if trainer/api/ is stale (CI)

protoc (from the pinned grpcio-tools) emits absolute imports such as
``from scalefed.v1 import common_pb2``; a top-level ``scalefed`` package must
never exist, so every reference to a generated module is rewritten to live
under ``trainer.api`` (``trainer.api.scalefed.v1.common_pb2``). The rewrite is
a pure text transform, so the output is deterministic and ``--check`` can
compare it byte for byte.
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
OUT_DIR = ROOT / "trainer" / "api"
API_PACKAGE = "trainer.api"
_INIT_TEXT = '"""Generated protobuf/gRPC code (scripts/gen_proto.py). Do not edit."""\n'


def _check_grpc_tools() -> None:
    from grpc_tools import grpc_version

    if grpc_version.VERSION != GRPC_TOOLS_VERSION:
        sys.exit(
            f"gen_proto: grpcio-tools {grpc_version.VERSION} is installed, the generated code is "
            f"pinned to {GRPC_TOOLS_VERSION}: pip install grpcio-tools=={GRPC_TOOLS_VERSION}"
        )


def _proto_files() -> list[Path]:
    files = sorted(PROTO_DIR.rglob("*.proto"))
    if not files:
        sys.exit(f"gen_proto: no .proto files under {PROTO_DIR}")
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
        sys.exit("gen_proto: protoc failed (see the messages above)")


def _module_names(out: Path) -> set[str]:
    """Dotted names (as protoc sees them) of every generated Python module."""
    return {
        ".".join(p.relative_to(out).with_suffix("").parts)
        for p in out.rglob("*.py")
    }


def _rewrite(text: str, modules: set[str]) -> str:
    """Point every reference to a generated module at its home under trainer.api."""

    def from_import(m: re.Match[str]) -> str:
        package, name = m.group(2), m.group(3)
        if f"{package}.{name}" in modules:
            return f"{m.group(1)}from {API_PACKAGE}.{package} import {name}"
        return m.group(0)

    def plain_import(m: re.Match[str]) -> str:
        if m.group(2) in modules:
            alias = m.group(3) or m.group(2).split(".")[-1]
            return f"{m.group(1)}import {API_PACKAGE}.{m.group(2)} as {alias}"
        return m.group(0)

    def module_literal(m: re.Match[str]) -> str:
        if m.group(2) in modules:
            return f"{m.group(1)}'{API_PACKAGE}.{m.group(2)}'"
        return m.group(0)

    text = re.sub(r"^(\s*)from ([\w.]+) import (\w+)", from_import, text, flags=re.MULTILINE)
    text = re.sub(r"^(\s*)import ([\w.]+)(?: as (\w+))?$", plain_import, text, flags=re.MULTILINE)
    # The module name protoc bakes into each message class's __module__.
    return re.sub(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, )'([\w.]+)'", module_literal, text)


def generate(dest: Path) -> None:
    """Compile every .proto into ``dest`` (a trainer/api-shaped tree)."""
    files = _proto_files()
    with tempfile.TemporaryDirectory() as raw_dir:
        raw = Path(raw_dir)
        _run_protoc(files, raw)
        modules = _module_names(raw)
        for src in sorted(raw.rglob("*")):
            if not src.is_file():
                continue
            target = dest / src.relative_to(raw)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_rewrite(src.read_text(), modules))
    # Every folder from trainer/api down is a regular package (no namespace packages).
    folders = {dest / d for p in dest.rglob("*.py") for d in p.relative_to(dest).parents}
    for folder in sorted(folders):
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text(_INIT_TEXT)


def _tree(root: Path) -> dict[str, str]:
    if not root.is_dir():
        return {}
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".pyi")
    }


def check() -> int:
    """Regenerate into a temp dir and compare with the committed tree."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp) / "api"
        generate(fresh_root)
        fresh, committed = _tree(fresh_root), _tree(OUT_DIR)
    problems: list[str] = []
    for name in sorted(set(fresh) | set(committed)):
        if name not in committed:
            problems.append(f"  missing: trainer/api/{name}")
        elif name not in fresh:
            problems.append(f"  not generated by any .proto (remove it): trainer/api/{name}")
        elif fresh[name] != committed[name]:
            diff = list(difflib.unified_diff(committed[name].splitlines(), fresh[name].splitlines(),
                                             lineterm="", n=0))
            changed = sum(1 for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---"))
            problems.append(f"  stale: trainer/api/{name} ({changed} lines differ)")
            problems.extend(f"      {line}" for line in diff[2:8])
    if problems:
        print("gen_proto --check: generated code is stale; run `python scripts/gen_proto.py`:")
        print("\n".join(problems))
        return 1
    print(f"gen_proto --check: trainer/api is up to date ({len(fresh)} files)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 with a diff summary if the committed code is stale")
    args = parser.parse_args(argv)
    _check_grpc_tools()
    if args.check:
        return check()
    for old in list(OUT_DIR.rglob("*_pb2*.py*")) if OUT_DIR.is_dir() else []:
        old.unlink()  # a removed .proto must not leave its modules behind
    generate(OUT_DIR)
    print(f"gen_proto: wrote {len(_tree(OUT_DIR))} files under {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
