"""The runner in-process: retries are bounded, timeouts fail trials, a halt loses nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from optimizer.study import storage as store
from optimizer.study.backends import BackendResult, RoundCallback, SyntheticBackend
from optimizer.study.manager import run_study
from optimizer.study.runner import StudyRunner
from tests.optimizer.conftest import assert_no_loss_no_duplicate, small_study
from trainer.errors import ConfigError, TrialCancelledError


def _trials(cfg: Any) -> list[Any]:
    study = store.create_or_load(cfg, cfg.distributions[0], store.open_storage(cfg.storage_url),
                                 must_exist=True)
    return study.get_trials(deepcopy=False)


def test_crashing_trainer_is_retried_and_nothing_is_lost(tmp_path: Path) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/r.db", n_trials=5, startup=3)
    outcomes = run_study(cfg, [SyntheticBackend(fail_first=2)], resume=False)
    trials = _trials(cfg)
    assert outcomes[0].n_complete == 5 and outcomes[0].n_failed == 2
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert all("died" in t.user_attrs["fail_reason"] for t in failed)
    assert all(len(t.intermediate_values) > 0 for t in trials if t.state == TrialState.COMPLETE)
    assert_no_loss_no_duplicate(trials, n_trials=5)


class _Hang:
    """A trainer that never answers (until cancelled)."""

    name = "hang"

    def run(self, params: Mapping[str, Any], *, on_round: RoundCallback | None = None,
            cancel: threading.Event | None = None) -> BackendResult:
        assert cancel is not None
        cancel.wait()
        raise TrialCancelledError("cancelled")


def test_timeouts_fail_trials_and_retries_are_bounded(tmp_path: Path) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/t.db", n_trials=2, startup=2,
                      trainer={"timeout_s": 0.3, "max_retries": 1, "heartbeat_s": 1, "lease_s": 3})
    run_study(cfg, [_Hang()], resume=False)
    trials = _trials(cfg)
    assert len(trials) == 4  # 2 parameter sets x (1 attempt + 1 retry), then it gives up
    assert {t.state for t in trials} == {TrialState.FAIL}
    assert {t.user_attrs["fail_reason"] for t in trials} == {"timed out"}
    assert sorted(t.user_attrs.get("attempt", 1) for t in trials) == [1, 1, 2, 2]


def test_halt_requeues_running_trials_and_resume_completes(tmp_path: Path) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/h.db", n_trials=6, startup=3)
    storage = store.open_storage(cfg.storage_url)
    backend = SyntheticBackend(delay_s=0.2)
    runner = StudyRunner(cfg=cfg, dist=cfg.distributions[0], storage=storage,
                         backends=[backend, backend])
    thread = threading.Thread(target=runner.run)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = [t.state for t in runner.study.get_trials(deepcopy=False)]
        if states.count(TrialState.COMPLETE) >= 2 and TrialState.RUNNING in states:
            break
        time.sleep(0.05)
    runner.halt()
    thread.join(30)
    assert not thread.is_alive()
    states = [t.state for t in _trials(cfg)]
    assert TrialState.RUNNING not in states
    interrupted = [t for t in _trials(cfg) if t.user_attrs.get("fail_reason") == "interrupted"]
    assert interrupted, "a running trial should have been cancelled and re-queued"
    run_study(cfg, [SyntheticBackend()], resume=True)
    assert_no_loss_no_duplicate(_trials(cfg), n_trials=6)


def test_resume_requires_the_same_definition(tmp_path: Path) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/d.db", n_trials=3, startup=3)
    with pytest.raises(ConfigError) as err:
        run_study(cfg, [SyntheticBackend()], resume=True)
    assert err.value.field == "name"
    run_study(cfg, [SyntheticBackend()], resume=False)
    changed = small_study(storage=cfg.storage, n_trials=3, startup=3, problems="20")
    with pytest.raises(ConfigError) as err:
        run_study(changed, [SyntheticBackend()], resume=True)
    assert err.value.field == "profile.problems"


def test_initial_points_run_first_then_sobol_then_gp(tmp_path: Path) -> None:
    import dataclasses

    cfg = small_study(storage=f"sqlite:///{tmp_path}/i.db", n_trials=5, startup=4)
    points = ({"scaling_factor": 0.5, "participation": 0.5},
              {"scaling_factor": 2.0, "participation": 0.5})
    cfg = dataclasses.replace(cfg, initial_points=points)
    run_study(cfg, [SyntheticBackend()], resume=False)
    trials = sorted(_trials(cfg), key=lambda t: t.number)
    assert [t.params for t in trials[:2]] == [dict(p) for p in points]
    assert [bool(t.user_attrs.get("design")) for t in trials] == [True] * 4 + [False]
    assert_no_loss_no_duplicate(trials, n_trials=5)
