"""The domain API a gRPC servicer will wrap, and the in-process backend adapter."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import TrialState

from optimizer.study.backends import InProcessBackend, SyntheticBackend
from optimizer.study.manager import StudyManager, completed_trials, run_study
from tests.optimizer.conftest import small_study
from trainer.contract import RoundEvent, TrialEvent, TrialResult, TrialSpec


def _fake_trial(spec: TrialSpec, *, on_event: Callable[[TrialEvent], None] | None = None,
                cancel: threading.Event | None = None) -> TrialResult:
    """Stands in for the real federated trial: pass@k peaks at s = 1."""
    for r in (1, 2):
        if on_event is not None:
            on_event(RoundEvent(round=r, total_rounds=2, clients=(0,), train_loss=1.0 / r,
                                update_norm=0.1, seconds=0.0))
    value = max(0.0, 0.5 - 0.1 * abs(spec.scaling_factor - 1.0))
    return TrialResult(pass_at_1=value / 3, pass_at_k=value, k=spec.k, stderr=0.02,
                       stderr_at_1=0.01, n=spec.samples, problems=("HumanEval/0",),
                       correct=(1,), timings={}, record={"spec": spec.to_dict()})


def test_inprocess_backend_builds_the_spec_and_reports_rounds(tmp_path: Path) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/ip.db", n_trials=3, startup=3)
    run_study(cfg, [InProcessBackend(_fake_trial)], resume=False)
    trials = completed_trials(cfg, "iid")
    assert len(trials) == 3
    for t in trials:
        assert t.value == max(0.0, 0.5 - 0.1 * abs(t.params["scaling_factor"] - 1.0))
        assert t.intermediate_values == {1: -1.0, 2: -0.5}  # -train_loss without a score


def test_manager_start_stop_get_best(tmp_path: Path) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/m.db", n_trials=40, startup=3)
    manager = StudyManager(backend_factory=lambda c: [SyntheticBackend(delay_s=0.05)])
    status = manager.start(cfg)
    assert status.running and [s.name for s in manager.list()] == ["t"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if manager.get("t", with_answer=False).distributions[0].states.get("COMPLETE", 0) >= 3:
            break
        time.sleep(0.1)
    stopped = manager.stop("t")
    assert not stopped.running
    assert "RUNNING" not in stopped.distributions[0].states
    best = manager.best("t", "iid")
    assert best.answer is not None and best.answer.predicted is not None
    assert best.answer.n_complete == best.states["COMPLETE"] >= 3
    assert manager.error("t") is None
    assert all(t.state == TrialState.COMPLETE for t in completed_trials(cfg, "iid"))


def test_a_study_that_ends_while_its_status_is_read_still_reads_as_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A status read from the storage, after which the study ends, must not come back as
    "finished" with a trial RUNNING (clients stop polling on running == False)."""
    import optimizer.study.manager as manager_mod

    cfg = small_study(storage=f"sqlite:///{tmp_path}/race.db", n_trials=2, startup=2)
    manager = StudyManager(backend_factory=lambda c: [SyntheticBackend(delay_s=0.1)])
    real_status = manager_mod.study_status
    seen_running = threading.Event()

    def read_then_let_the_study_end(c: object, **kw: object) -> object:
        status = real_status(c, **kw)  # type: ignore[arg-type]
        if status.distributions[0].states.get("RUNNING"):
            seen_running.set()
            manager._threads["t"].join(timeout=60)  # the study ends after the read
        return status

    monkeypatch.setattr(manager_mod, "study_status", read_then_let_the_study_end)
    manager.start(cfg)
    while True:
        status = manager.get("t", with_answer=False)
        if not status.running:
            break
        time.sleep(0.05)
    assert seen_running.is_set()
    assert status.distributions[0].states == {"COMPLETE": 2}
