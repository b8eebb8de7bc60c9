"""The thread-count rule: env override, affinity and cgroup quota bound torch's default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from trainer import threads
from trainer.threads import THREADS_ENV, cgroup_cpu_limit, configure_threads, threads_wanted


def test_cgroup_quota_is_read_and_rounded_up(tmp_path: Path) -> None:
    path = tmp_path / "cpu.max"
    path.write_text("150000 100000\n")
    assert cgroup_cpu_limit(path) == 2
    path.write_text("max 100000\n")
    assert cgroup_cpu_limit(path) is None
    path.write_text("garbage")
    assert cgroup_cpu_limit(path) is None
    assert cgroup_cpu_limit(tmp_path / "absent") is None


def test_threads_bounded_by_what_the_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    assert threads_wanted(64) == 2  # a 2-CPU container on a big host: not 64
    assert threads_wanted(1) == 1  # never more than torch's own default
    monkeypatch.setenv(THREADS_ENV, "3")
    assert threads_wanted(64) == 3  # the override wins
    monkeypatch.setenv(THREADS_ENV, "zero")
    assert threads_wanted(64) == 2  # a bad override is ignored


def test_configure_threads_sets_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(THREADS_ENV, "1")
        assert configure_threads() == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_passive_wait_is_a_default_the_user_can_override(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.threads import OMP_WAIT_ENV, prefer_passive_wait

    monkeypatch.delenv(OMP_WAIT_ENV, raising=False)
    prefer_passive_wait()
    assert os.environ[OMP_WAIT_ENV] == "PASSIVE"
    monkeypatch.setenv(OMP_WAIT_ENV, "ACTIVE")
    prefer_passive_wait()
    assert os.environ[OMP_WAIT_ENV] == "ACTIVE"
