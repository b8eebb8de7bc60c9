"""Shared machinery of the benchmarks that compare code versions and precisions in one run.

A benchmark's *sides* each run the same workload in a fresh subprocess, one after
the other and alternating between repeats, so that they see the same machine:

* ``previous``: the last landed release's code, from a git worktree of
  :data:`PREVIOUS_RELEASE` (made once under ``.bench/``), on its own default path;
* ``fp32`` and ``bf16``: this tree's code with ``dtype`` float32 and bfloat16.

A payload script (``tests/benchmarks/payloads/``) runs in the side's tree (its
``trainer`` package first on ``PYTHONPATH``) and prints one JSON object as its
last line. Payloads use only APIs both trees have, and pass ``dtype`` only to
this tree.

Every benchmark prints the host first (:func:`host_header`): CPU, AMX / AVX512-BF16,
and measured fp32 and bf16 GEMM rates at this model's shapes, because two-core
hosts here differ by well over 1.5x.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PAYLOADS = Path(__file__).resolve().parent / "payloads"
# The last landed main before this release (its default path is the speed baseline).
PREVIOUS_RELEASE = "f354390"
SIDES = ("previous", "fp32", "bf16")


def baseline_tree(ref: str = PREVIOUS_RELEASE) -> Path:
    """A git worktree of ``ref`` under ``.bench/`` (created once, detached)."""
    tree = ROOT / ".bench" / f"release-{ref}"
    if not (tree / "trainer").is_dir():
        tree.parent.mkdir(exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref],
                       check=True, capture_output=True)
    return tree


def run_side(side: str, payload: str, args: Sequence[str], *, baseline: Path | None = None,
             timeout: float = 3600, dtype: bool = True) -> dict[str, Any]:
    """Run ``payloads/<payload>.py`` for ``side`` and return its JSON result.

    The benchmark's own process never imports torch, so no OpenMP thread of its own
    spins beside a side's (with ``OMP_WAIT_POLICY=ACTIVE`` they would, for ever)."""
    tree = (baseline or baseline_tree()) if side == "previous" else ROOT
    extra = ([] if side == "previous" or not dtype
             else ["--dtype", {"fp32": "float32", "bf16": "bfloat16"}[side]])
    env = {**os.environ, "PYTHONPATH": str(tree), "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, str(PAYLOADS / f"{payload}.py"), *args, *extra],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} side of {payload} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def host_header() -> str:
    """The host's capabilities and measured GEMM rates, printed first by every benchmark."""
    caps = run_side("fp32", "host", [], dtype=False)
    lines = [f"host: {caps['cpu']}; {caps['threads']} threads; torch CPU capability "
             f"{caps['torch_cpu_capability']}; amx_bf16={caps['amx_bf16']} "
             f"avx512_bf16={caps['avx512_bf16']}; dtype auto -> {caps['auto_dtype_cpu']}"
             + (f"; CUDA: {', '.join(caps['cuda'])}" if caps["cuda"] else "")]
    for rate in caps["gemm"]:
        (k, n), rows = rate["shape"], rate["rows"]
        lines.append(f"  GEMM {rows}x{k} @ {k}x{n}: fp32 {rate['float32']:.0f} GFLOP/s, bf16 "
                     f"{rate['bfloat16']:.0f} GFLOP/s ({rate['bfloat16'] / rate['float32']:.2f}x)")
    return "\n".join(lines)


def order(repeat: int, sides: Sequence[str]) -> list[str]:
    """Sides in turn, reversed every other repeat, so no side always runs first."""
    return list(sides) if repeat % 2 == 0 else list(sides)[::-1]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def paired_difference(base: Sequence[float], other: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the per-problem differences ``other - base``."""
    import math

    diffs = [b - a for a, b in zip(base, other, strict=True)]
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1))
    return mean, sd / math.sqrt(len(diffs))
