"""Where a trial runs and in which precision: device and dtype settings, resolved once.

A trial names a ``device`` (``cpu``, ``cuda``, ``cuda:N`` or ``auto``) and a
``dtype`` (``float32``, ``bfloat16`` or ``auto``). ``auto`` is resolved here,
once, at run time, never assumed from the machine a study was written on:

* device ``auto``: the first CUDA device when torch sees one, else the CPU;
* dtype ``auto``: ``bfloat16`` on CUDA and on CPUs with native bf16 arithmetic
  (``amx_bf16``: Intel's AMX tiles; ``avx512_bf16``: the AVX-512 bf16 dot
  products of Cooper Lake and AMD Zen 4 on), ``float32`` elsewhere. Without one
  of those, bf16 GEMMs are emulated and slower than fp32.

Why bf16 at all: a trial's time is GEMMs, and at SmolLM2's shapes on two
cores bf16 GEMMs ran 3-4.5x faster than fp32 both on an AMX Xeon and on an
AVX512-BF16 EPYC (``tests/benchmarks/bench_trial.py`` prints the host's rates
first). Training keeps the frozen base weights in bf16 and the LoRA
parameters, their optimizer state and the loss in fp32
(:mod:`trainer.federated.rounds`); sampling runs the bf16 weights through the
project's own engine (:mod:`trainer.evaluation.engine`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import ConfigError

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "bfloat16", "auto")
DEVICE_NAMES = "cpu, cuda, cuda:N or auto"
_DEVICE = re.compile(r"cpu|cuda|cuda:\d{1,3}|auto")
# /proc/cpuinfo flags that mean bf16 GEMMs run natively (not emulated in fp32).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
_CPUINFO = Path("/proc/cpuinfo")


def check_dtype(name: str) -> str:
    """Validate a dtype setting (raises ConfigError naming the accepted values)."""
    if name not in DTYPES:
        raise ConfigError("dtype", f"unknown dtype {name[:40]!r}", accepted=", ".join(DTYPES))
    return name


def check_device(name: str) -> str:
    """Validate a device setting's syntax (whether it exists is known only at run time)."""
    if not _DEVICE.fullmatch(name):
        raise ConfigError("device", f"unknown device {name[:40]!r}", accepted=DEVICE_NAMES)
    return name


@functools.lru_cache(maxsize=1)
def cpu_flags(path: Path = _CPUINFO) -> frozenset[str]:
    """The CPU feature flags of this host (empty where /proc/cpuinfo is unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_bf16_native(flags: frozenset[str] | None = None) -> bool:
    """True when this CPU computes bf16 dot products natively (AMX-BF16 or AVX512-BF16)."""
    have = cpu_flags() if flags is None else flags
    return any(flag in have for flag in BF16_CPU_FLAGS)


def cuda_count() -> int:
    """CUDA devices torch can use here (0 on a CPU-only build or machine)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(name: str) -> str:
    """A concrete device string for a setting: ``auto`` -> ``cuda:0`` or ``cpu``.

    Raises ConfigError when a named CUDA device does not exist on this host.
    """
    check_device(name)
    if name == "auto":
        return "cuda:0" if cuda_count() > 0 else "cpu"
    if name == "cpu":
        return name
    count = cuda_count()
    index = int(name.partition(":")[2] or 0)
    if index >= count:
        found = f"{count} CUDA device(s)" if count else "no CUDA device"
        raise ConfigError("device", f"{name} is not available: this worker has {found}",
                          accepted="cpu" + (f" or cuda:0..cuda:{count - 1}" if count else ""))
    return f"cuda:{index}"


def resolve_dtype(name: str, device: str, *, flags: frozenset[str] | None = None) -> str:
    """A concrete dtype for a setting on a resolved device (see the module docstring)."""
    check_dtype(name)
    if name != "auto":
        return name
    if device.startswith("cuda"):
        return "bfloat16"
    return "bfloat16" if cpu_bf16_native(flags) else "float32"


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a concrete dtype name."""
    import torch

    if name not in ("float32", "bfloat16"):
        raise ConfigError("dtype", f"{name!r} is not a concrete dtype", accepted="float32, bfloat16")
    return getattr(torch, name)  # type: ignore[no-any-return]


@dataclass(frozen=True, kw_only=True)
class Placement:
    """A trial's resolved device and dtype, as the run record names them."""

    device: str
    dtype: str
    requested_device: str
    requested_dtype: str

    def to_record(self) -> dict[str, str]:
        return {"device": self.device, "dtype": self.dtype,
                "requested_device": self.requested_device,
                "requested_dtype": self.requested_dtype}


def resolve(*, device: str, dtype: str) -> Placement:
    """Resolve both settings once (device first: dtype ``auto`` depends on it)."""
    concrete = resolve_device(device)
    return Placement(device=concrete, dtype=resolve_dtype(dtype, concrete),
                     requested_device=device, requested_dtype=dtype)


def host_capabilities() -> dict[str, Any]:
    """What a benchmark prints first: the CPU, its bf16 support, torch's kernels, CUDA."""
    import torch

    model = ""
    try:
        for line in _CPUINFO.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    return {
        "cpu": model or "unknown",
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512f": "avx512f" in flags,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "cuda": [torch.cuda.get_device_name(i) for i in range(cuda_count())],
        "auto_dtype_cpu": resolve_dtype("auto", "cpu"),
    }


def gemm_rates(*, rows: int = 240, shape: tuple[int, int] = (576, 1536),
               seconds: float = 0.4, device: str = "cpu") -> dict[str, float]:
    """Measured GFLOP/s of ``torch.nn.Linear`` at one shape, fp32 and bf16, on ``device``."""
    import time

    import torch

    out: dict[str, float] = {}
    for name in ("float32", "bfloat16"):
        layer = torch.nn.Linear(*shape, bias=False).to(device=device, dtype=torch_dtype(name))
        x = torch.randn(rows, shape[0], device=device, dtype=torch_dtype(name))
        with torch.no_grad():
            for _ in range(3):
                layer(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                layer(x)
                count += 1
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            elapsed = (time.perf_counter() - start) / count
        out[name] = 2 * rows * shape[0] * shape[1] / elapsed / 1e9
    return out
