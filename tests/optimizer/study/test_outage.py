"""A real trainer worker killed for 20 s in the middle of a study over ``--backend grpc``,
then restarted on the same port: the study ends with ``n_trials`` complete per
distribution, and no trial was sent while the worker was down (issue 10, item 3)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from optimizer.study.backends import GrpcBackend
from optimizer.study.manager import backends_for, run_study
from optimizer.study.studyfile import StudyConfig
from tests.optimizer.conftest import _free_port, assert_no_loss_no_duplicate, small_study

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[3]
TRAINER = {"heartbeat_s": 1.0, "lease_s": 3.0}


def _trials(cfg: StudyConfig, label: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=cfg.study_name(cfg.distribution(label)),
                             storage=cfg.storage_url).get_trials()


def _serve(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "optimizer.cli", "trainer", "serve",
                             "--port", str(port), "--trial-fn", "tests.trainer.fakes:fake_trial"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _until(check: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _states(db: Path) -> list[str]:
    try:  # read-only: polling must not create the file before the runner does
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
            rows = con.execute("SELECT state FROM trials").fetchall()
    except sqlite3.OperationalError:  # the runner is still creating the schema
        return []
    return [r[0] for r in rows]


def test_a_worker_killed_for_20_s_mid_study_loses_no_trial(tmp_path: Path) -> None:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    cfg = small_study(storage=f"sqlite:///{tmp_path}/outage.db", n_trials=3, startup=3,
                      problems="4", distributions=[{"kind": "iid"},
                                                   {"kind": "dirichlet", "alpha": 0.1}],
                      trainer={**TRAINER, "max_retries": 1, "endpoints": [address]})
    worker = _serve(port)
    probe = GrpcBackend(address, retries=0)
    outcomes: list[Any] = []
    try:
        _until(lambda: probe.unavailable() is None, "the worker to serve")
        study = threading.Thread(target=lambda: outcomes.extend(
            run_study(cfg, backends_for(cfg, "grpc"), resume=False)), daemon=True)
        study.start()
        _until(lambda: "COMPLETE" in (s := _states(tmp_path / "outage.db"))
               and "RUNNING" in s, "the middle of the study")
        worker.kill()  # SIGKILL: no drain, the running trial's stream just breaks
        worker.wait()
        down = time.time()
        time.sleep(20)
        up = time.time()
        worker = _serve(port)
        study.join(150)
        assert not study.is_alive()
    finally:
        worker.kill()
        worker.wait()
        probe.close()
    assert [(o.label, o.n_complete, o.ended) for o in outcomes] == [
        ("iid", 3, "budget"), ("dirichlet-0.1", 3, "budget")]
    starts = []
    for label in ("iid", "dirichlet-0.1"):
        trials = _trials(cfg, label)
        assert_no_loss_no_duplicate(trials, n_trials=3)
        starts += [t.datetime_start.timestamp() for t in trials if t.datetime_start is not None]
    # The runner waited for the worker: no trial was sent to it while it was down.
    assert not [s for s in starts if down + 1.0 < s < up]
