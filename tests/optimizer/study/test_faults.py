"""Faults a study survives (issue 10): a trainer that is down or full, runners that die,
runners that propose at once, a failing storage, an absurd timeout.

Each test reproduces the fault and fails on the code before the fix. The 20 s outage
of a real worker is in test_outage.py, the 12 kill -9 in test_crash.py.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.exc
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage
from optuna.trial import TrialState, create_trial

from optimizer.cli import main
from optimizer.science.space import to_distributions
from optimizer.study import lease
from optimizer.study import storage as store
from optimizer.study.backends import (
    BackendResult,
    GrpcBackend,
    RoundCallback,
    SyntheticBackend,
    TrialNotStartedError,
)
from optimizer.study.budget import CLEARED, DUPLICATE_OF, never_run_reason
from optimizer.study.faults import StorageError
from optimizer.study.runner import StudyRunner
from optimizer.study.spool import spool_path
from optimizer.study.studyfile import StudyConfig
from tests.optimizer.conftest import (
    _free_port,
    assert_no_loss_no_duplicate,
    small_study,
    study_toml,
)
from tests.trainer.fakes import FakeTrial
from trainer.errors import ConfigError
from trainer.service.server import ServerConfig, TrainerServer, create_server
from trainer.service.worker import WorkerPolicy

pytestmark = pytest.mark.timeout(180)
TRAINER = {"heartbeat_s": 1.0, "lease_s": 3.0}


def _trials(cfg: StudyConfig, label: str = "iid") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=cfg.study_name(cfg.distribution(label)),
                             storage=cfg.storage_url).get_trials()


def _runner(cfg: StudyConfig, backends: list[Any], **kwargs: Any) -> StudyRunner:
    return StudyRunner(cfg=cfg, dist=cfg.distributions[0], storage=store.open_storage(
        cfg.storage_url), backends=backends, **kwargs)


class _Counting:
    """A SyntheticBackend that counts its runs, failing the first ``not_started`` unstarted."""

    def __init__(self, *, not_started: int = 0) -> None:
        self.name = "counting"
        self.calls: list[dict[str, Any]] = []
        self._inner = SyntheticBackend()
        self._not_started = not_started

    def run(self, params: Mapping[str, Any], *, on_round: RoundCallback | None = None,
            cancel: threading.Event | None = None) -> BackendResult:
        if self._not_started > 0:
            self._not_started -= 1
            raise TrialNotStartedError("worker stayed busy")
        self.calls.append(dict(params))
        return self._inner.run(params, on_round=on_round, cancel=cancel)


def _worker(port: int) -> TrainerServer:
    srv = create_server(ServerConfig(port=port, capacity=1,
                                     policy=WorkerPolicy(max_scaling_factor=5.0)),
                        trial_fn=FakeTrial(round_seconds=0.02))
    srv.start()
    return srv


# ------------------------------------------------------------ item 3 ----


def test_unreachable_worker_is_waited_for_and_costs_no_retry(tmp_path: Path) -> None:
    port = _free_port()
    cfg = small_study(storage=f"sqlite:///{tmp_path}/down.db", n_trials=2, startup=2,
                      problems="4", trainer={**TRAINER, "max_retries": 0})
    backend = GrpcBackend(f"127.0.0.1:{port}", retries=0)
    runner = _runner(cfg, [backend], outage_backoff_s=0.5)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    time.sleep(1.5)  # the worker is down: no retries left to burn, max_retries = 0
    up = time.time()
    srv = _worker(port)
    try:
        thread.join(120)
        assert not thread.is_alive()
    finally:
        srv.stop(grace=0)
        backend.close()
    trials = _trials(cfg)
    assert {t.state for t in trials} == {TrialState.COMPLETE}, [t.state for t in trials]
    assert_no_loss_no_duplicate(trials, n_trials=2)
    # Nothing was asked while the worker was down: the runner waited before taking work.
    assert all(t.datetime_start is not None and t.datetime_start.timestamp() >= up - 0.5
               for t in trials)


def test_worker_reports_busy_and_unreachable(tmp_path: Path) -> None:
    port = _free_port()
    backend = GrpcBackend(f"127.0.0.1:{port}", retries=0)
    assert (backend.unavailable() or "").startswith("unreachable")
    srv = create_server(ServerConfig(port=port, capacity=1,
                                     policy=WorkerPolicy(max_scaling_factor=5.0)),
                        trial_fn=FakeTrial(round_seconds=0.05))
    srv.start()
    try:
        deadline = time.monotonic() + 10  # the channel reconnects on its own backoff
        while backend.unavailable() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert backend.unavailable() is None
        cancel = threading.Event()
        hog = threading.Thread(target=_swallow, args=(backend, cancel), daemon=True)
        hog.start()
        deadline = time.monotonic() + 10
        while backend.unavailable() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (backend.unavailable() or "").startswith("busy")
        cancel.set()
        hog.join(10)
    finally:
        srv.stop(grace=0)
        backend.close()


def _swallow(backend: GrpcBackend, cancel: threading.Event) -> None:
    try:
        backend.run({"scaling_factor": 1.0, "participation": 0.5, "model": "tiny-random",
                     "budget_mode": "rounds", "rounds": 400, "problems": "4"}, cancel=cancel)
    except Exception as exc:  # noqa: BLE001 - cancelled on purpose
        assert "cancel" in str(exc).lower()


def test_a_trial_the_trainer_never_started_costs_no_retry(tmp_path: Path) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/busy.db", n_trials=2, startup=2,
                      trainer={**TRAINER, "max_retries": 0})
    backend = _Counting(not_started=3)
    _runner(cfg, [backend]).run()
    trials = _trials(cfg)
    assert_no_loss_no_duplicate(trials, n_trials=2)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 3 and all("TrialNotStartedError" in t.user_attrs["fail_reason"]
                                     for t in failed)
    assert all(t.user_attrs.get(lease.ATTEMPT, 1) == 1 for t in trials)


# ----------------------------------------------------------- item 10 ----


def _draws(url: str) -> list[dict[str, Any]]:
    """Two runner processes (each its own storage and sampler) asking in turn."""
    cfg = small_study(storage=url, n_trials=8, startup=4)
    dist = cfg.distributions[0]
    one = store.create_or_load(cfg, dist, store.open_storage(url), must_exist=False)
    two = store.create_or_load(cfg, dist, store.open_storage(url), must_exist=True)
    for _ in range(4):
        one.ask()  # the start-up design is taken and nothing is complete: random proposals
    return [study.ask(to_distributions(cfg.space)).params for study in (one, two, one, two)]


def test_runner_processes_draw_different_points_and_a_study_repeats_its_own(
        tmp_path: Path) -> None:
    first = _draws(f"sqlite:///{tmp_path}/a.db")
    assert len({tuple(sorted(p.items())) for p in first}) == 4, first
    assert _draws(f"sqlite:///{tmp_path}/b.db") == first  # one seed, one study: reproducible


def test_a_concurrent_identical_proposal_yields_exactly_once() -> None:
    study = optuna.create_study()
    dists: dict[str, BaseDistribution] = {"x": FloatDistribution(0.0, 1.0)}
    for _ in range(2):
        study.add_trial(create_trial(params={"x": 0.5}, distributions=dists,
                                     state=TrialState.RUNNING))
    early, late = study.get_trials()
    both = [early, late]
    assert never_run_reason(late, both, n_trials=9) == (DUPLICATE_OF, early.number)
    assert never_run_reason(early, both, n_trials=9) is None  # the later one yields
    study._storage.set_trial_system_attr(late._trial_id, CLEARED, True)
    early, late = study.get_trials()  # ... unless the later one was cleared to run first
    assert never_run_reason(early, [early, late], n_trials=9) == (DUPLICATE_OF, late.number)
    # A point the sampler chose knowing the other trial is a replicate, not a race.
    assert never_run_reason(late, both, n_trials=9, known={early._trial_id}) is None


# ----------------------------------------------------------- item 11 ----


def _dead_owner() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{socket.gethostname()}|{proc.pid}|1"


def test_a_dead_runner_costs_its_trials_no_retry(tmp_path: Path) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/dead.db", n_trials=2, startup=2,
                      trainer={**TRAINER, "lease_s": 60.0, "max_retries": 0})
    storage = store.open_storage(cfg.storage_url)
    study = store.create_or_load(cfg, cfg.distributions[0], storage, must_exist=False)
    held = study.ask()  # a runner took it, then was killed
    storage.set_trial_system_attr(held._trial_id, lease.OWNER_KEY, _dead_owner())
    _runner(cfg, [SyntheticBackend()]).run()
    trials = _trials(cfg)
    assert_no_loss_no_duplicate(trials, n_trials=2)
    retry = next(t for t in trials if t.user_attrs.get(lease.REQUEUED_FROM) == held.number)
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs[lease.ATTEMPT] == 1 and retry.user_attrs[lease.LOST_RUNNERS] == 1


def test_parameters_whose_runners_keep_dying_are_given_up(tmp_path: Path) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/doom.db", n_trials=1, startup=1)
    storage = store.open_storage(cfg.storage_url)
    study = store.create_or_load(cfg, cfg.distributions[0], storage, must_exist=False)
    study.enqueue_trial({"scaling_factor": 1.0, "participation": 0.5},
                        user_attrs={lease.RETRY_OF: 0, lease.LOST_RUNNERS: lease.MAX_LOST_RUNNERS})
    for trial in (study.ask(), study.ask()):
        storage.set_trial_system_attr(trial._trial_id, lease.OWNER_KEY, _dead_owner())
    assert len(lease.reap_stale(study, storage, lease_s=60, max_retries=3)) == 2
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs[lease.LOST_RUNNERS] for t in waiting] == [1]  # the doomed one is not


# ----------------------------------------------------------- item 15 ----


def _db_error(message: str) -> StorageInternalError:
    """What Optuna raises when SQLite refuses a commit (its text hides the cause)."""
    error = StorageInternalError("An exception is raised during the commit. This typically "
                                 "happens due to invalid data in the commit, e.g. exceeding "
                                 "max length.")
    error.__cause__ = sqlalchemy.exc.OperationalError("UPDATE trials SET state=?", {},
                                                      sqlite3.OperationalError(message))
    return error


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """``disk["full"]`` = how many COMPLETE writes fail with 'database or disk is full'."""
    box = {"full": 0, "refused": 0}
    original = RDBStorage.set_trial_state_values

    def flaky(self: RDBStorage, trial_id: int, state: TrialState, values: Any = None) -> bool:
        if state == TrialState.COMPLETE and box["full"] > 0:
            box["full"] -= 1
            box["refused"] += 1
            raise _db_error("database or disk is full")
        return original(self, trial_id, state, values)

    monkeypatch.setattr(RDBStorage, "set_trial_state_values", flaky)
    yield box


def test_a_full_disk_when_a_trial_finishes_loses_nothing(tmp_path: Path,
                                                         disk: dict[str, int]) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/full.db", n_trials=2, startup=2)
    backend = _Counting()
    disk["full"] = 1
    _runner(cfg, [backend], storage_patience_s=10).run()
    assert disk["refused"] == 1
    assert_no_loss_no_duplicate(_trials(cfg), n_trials=2)
    assert len(backend.calls) == 2  # the refused result was stored on retry, not re-run


def test_a_disk_that_stays_full_keeps_the_result_for_resume(tmp_path: Path,
                                                            disk: dict[str, int]) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/full.db", n_trials=3, startup=3)
    backend = _Counting()
    disk["full"] = 10**6
    with pytest.raises(StorageError) as info:
        _runner(cfg, [backend], storage_patience_s=0.3).run()
    message = str(info.value)
    assert info.value.cause == "disk full" and "\n" not in message
    assert "kept in" in message and "study resume" in message
    kept = [json.loads(line) for line in spool_path(cfg.storage_url).read_text().splitlines()]
    assert len(kept) == 1 and len(backend.calls) == 1
    disk["full"] = 0  # space freed; resume
    _runner(cfg, [backend]).run()
    trials = _trials(cfg)
    assert_no_loss_no_duplicate(trials, n_trials=3)
    restored = next(t for t in trials if t.number == kept[0]["number"])
    assert restored.state == TrialState.COMPLETE and restored.value == kept[0]["value"]
    assert len(backend.calls) == 3 and not spool_path(cfg.storage_url).exists()


def _cli_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    study = tmp_path / "faults.toml"
    study.write_text(study_toml(name="faults", n_trials=3,
                                storage=f"sqlite:///{tmp_path / 'f.db'}",
                                sections={"sampler": {"n_startup_trials": 2}}))
    assert main(["study", *args[:1], str(study), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("scalefed: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_corrupt_database_is_one_clear_line(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "f.db"
    cfg = small_study(storage=f"sqlite:///{db}")
    store.create_or_load(cfg, cfg.distributions[0], store.open_storage(cfg.storage_url),
                         must_exist=False)
    with open(db, "r+b") as fh:  # a sound header and schema page, damaged table pages
        fh.seek(2 * 4096)
        fh.write(bytes(range(256)) * 64)
    line = _cli_error(tmp_path, capsys, "status")
    assert "corrupt" in line and "malformed" in line


def test_read_only_storage_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise _db_error("attempt to write a readonly database")

    monkeypatch.setattr(RDBStorage, "set_trial_system_attr", refuse)  # the first lease write
    line = _cli_error(tmp_path, capsys, "run", "--backend", "synthetic", "--no-progress")
    assert "read-only" in line and "readonly database" in line


def test_a_full_disk_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise _db_error("database or disk is full")

    monkeypatch.setattr(RDBStorage, "_create_new_trial", refuse)  # the start-up design
    line = _cli_error(tmp_path, capsys, "run", "--backend", "synthetic", "--no-progress")
    assert "disk full" in line and "free space" in line


# -------------------------------------------------------- timeout_s ----


@pytest.mark.parametrize("timeout", [1e308, float("inf"), float("nan")])
def test_a_timeout_no_timer_can_wait_is_rejected(tmp_path: Path, timeout: float) -> None:
    with pytest.raises(ConfigError, match="trainer.timeout_s"):
        small_study(storage=f"sqlite:///{tmp_path}/t.db", trainer={**TRAINER,
                                                                  "timeout_s": timeout})


def test_the_runner_keeps_its_timer_alive_with_a_huge_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/t.db", n_trials=2, startup=2)
    # A caller that builds the config itself skips the study file's bound.
    cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, timeout_s=1e308))
    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    _runner(cfg, [SyntheticBackend()]).run()
    assert died == []
    assert_no_loss_no_duplicate(_trials(cfg), n_trials=2)
