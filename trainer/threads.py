"""The one place that sets torch's CPU thread count for training and sampling.

torch's default intra-op thread count is the machine's core count as
OpenMP sees it, which ignores a CPU affinity mask (``taskset``, a pinned
worker) and a container's CPU quota (cgroup ``cpu.max``): a worker given 2
CPUs of a 64-core host would run 32+ threads on 2 CPUs, and every matmul
would pay for the oversubscription. :func:`configure_threads` therefore uses

1. ``$SCALEFED_THREADS`` when set (a positive integer), else
2. the smallest of torch's default, the CPUs in this process's affinity mask,
   and the cgroup CPU quota rounded up.

On the 2-core reference machine all three are 2 (one thread per core; more
threads than cores only time-slice). On a larger machine the rule keeps
torch's default, bounded by what the process may actually use; run several
workers with ``SCALEFED_THREADS`` set to cores / workers when one machine
serves several trials at once. The inter-op pool is left alone: the training
and sampling loops run one op at a time.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

THREADS_ENV = "SCALEFED_THREADS"
OMP_WAIT_ENV = "OMP_WAIT_POLICY"
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit(path: Path = _CGROUP_CPU_MAX) -> int | None:
    """CPUs allowed by a cgroup v2 quota (``cpu.max``), rounded up; ``None`` when unlimited."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, bounded by the cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return min(cpus, limit) if limit is not None else cpus


def threads_wanted(torch_default: int) -> int:
    """The thread count :func:`configure_threads` sets, given torch's own default."""
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value >= 1:
            return value
        log.warning("ignoring %s=%r: not a positive integer", THREADS_ENV, env)
    return max(1, min(torch_default, available_cpus()))


def prefer_passive_wait() -> None:
    """Let idle OpenMP threads sleep rather than spin (unless the user chose otherwise).

    torch's OpenMP threads spin at every barrier by default. When anything else
    wants a core (another worker, a test run, the sandbox's executions), a
    spinning thread takes the time slice its lagging sibling needs, and each
    barrier waits for a descheduled thread: on the 2-core machine int8 sampling
    ran at 50 tok/s with 2 spinning threads against 128 tok/s with passive
    waiting, beside one busy process. libgomp reads the policy once, when torch
    is imported, so entry points call this before importing torch.
    """
    os.environ.setdefault(OMP_WAIT_ENV, "PASSIVE")


_DEFAULT: list[int] = []  # torch's default, read before the first change


def configure_threads() -> int:
    """Set torch's intra-op thread count (see the module docstring); return it.

    Idempotent and cheap, so every entry point that trains or samples calls it.
    """
    import torch

    if not _DEFAULT:
        _DEFAULT.append(torch.get_num_threads())
    wanted = threads_wanted(_DEFAULT[0])
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
        log.info("torch threads: %d", wanted)
    return wanted
