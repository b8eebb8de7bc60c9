"""Crash safety with real processes: kill -9 then resume; two runners on one PostgreSQL study."""

from __future__ import annotations

import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from tests.optimizer.conftest import assert_no_loss_no_duplicate, study_toml

ROOT = Path(__file__).resolve().parents[3]

def _write(tmp_path: Path, storage: str, n_trials: int,
           distributions: Sequence[Mapping[str, Any]] = ({"kind": "iid"},)) -> Path:
    path = tmp_path / "crash.toml"
    path.write_text(study_toml(
        name="crash", seed=3, n_trials=n_trials, storage=storage, distributions=distributions,
        profile={"problems": "40"},
        sections={"trainer": {"workers": 2, "heartbeat_s": 1, "lease_s": 10, "max_retries": 3},
                  "sampler": {"n_startup_trials": 4}, "stop": {"enabled": False}}))
    return path


def _cli(action: str, study: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "optimizer.cli", "study", action, str(study), "--backend",
            "synthetic", "--no-progress", *extra]


def _states(storage: str) -> list[TrialState]:
    """Read trial states with plain sqlite3: opening an Optuna storage while the runner is
    still creating the schema would race it."""
    path = storage[len("sqlite:///"):]
    if not Path(path).exists():
        return []
    try:
        with sqlite3.connect(path, timeout=30) as db:
            rows = db.execute("SELECT state FROM trials").fetchall()
    except sqlite3.OperationalError:  # schema not there yet
        return []
    return [TrialState[r[0]] for r in rows]


def _start_and_wait_mid_study(study: Path, storage: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(_cli("run", study, "--synthetic-delay", "0.3"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        states = _states(storage)
        if states.count(TrialState.COMPLETE) >= 2 and TrialState.RUNNING in states:
            return proc
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("runner never reached the middle of the study")


def test_sigterm_requeues_running_trials_and_exits(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/term.db"
    proc = _start_and_wait_mid_study(_write(tmp_path, storage, n_trials=8), storage)
    proc.send_signal(signal.SIGTERM)  # handled like Ctrl-C
    assert proc.wait(timeout=60) == 130
    states = _states(storage)
    assert TrialState.RUNNING not in states and TrialState.WAITING in states


def test_sigkill_mid_study_then_resume_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/crash.db"
    study = _write(tmp_path, storage, n_trials=8)
    proc = _start_and_wait_mid_study(study, storage)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert TrialState.RUNNING in _states(storage), "the kill should leave a RUNNING trial behind"
    done = subprocess.run(_cli("resume", study), check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr
    assert "| iid |" in done.stdout  # the answer table
    trials = optuna.load_study(study_name="crash/iid", storage=storage).get_trials()
    assert_no_loss_no_duplicate(trials, n_trials=8)
    assert any(t.user_attrs.get("fail_reason") == "lease expired" for t in trials)


def test_two_runners_share_one_postgres_study(tmp_path: Path, postgres_url: str) -> None:
    study = _write(tmp_path, postgres_url, n_trials=12)
    procs = [subprocess.Popen(_cli("run", study, "--synthetic-delay", "0.1"), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    trials = optuna.load_study(study_name="crash/iid", storage=postgres_url).get_trials()
    assert_no_loss_no_duplicate(trials, n_trials=12)
    owners = {t.system_attrs["scalefed:owner"] for t in trials if t.state == TrialState.COMPLETE}
    assert len(owners) == 2, owners  # both processes ran trials of the one study
    # Proposals made at once from the same data never both run (issue 10, item 10).
    spans = [(t.datetime_start, t.datetime_complete, t) for t in trials
             if t.state == TrialState.COMPLETE and t.datetime_start and t.datetime_complete]
    for (a0, a1, a), (b0, b1, b) in itertools.combinations(spans, 2):
        assert not (a0 < b1 and b0 < a1 and a.params == b.params), (a.number, b.number, a.params)


def _holds_a_running_trial(storage: str, pid: int) -> bool:
    """Whether process ``pid`` leases a RUNNING trial (read with sqlite3, as in _states;
    read-only, so that polling never creates the file the runner is about to create)."""
    try:
        with sqlite3.connect(f"file:{storage[len('sqlite:///'):]}?mode=ro", uri=True,
                             timeout=30) as db:
            rows = db.execute("SELECT a.value_json FROM trials t JOIN trial_system_attributes a "
                              "ON a.trial_id = t.trial_id WHERE t.state = 'RUNNING' "
                              "AND a.key = 'scalefed:owner'").fetchall()
    except sqlite3.OperationalError:  # schema not there yet
        return False
    return any(f"|{pid}|" in r[0] for r in rows)


def test_twelve_sigkills_each_followed_by_resume_cost_no_trial_and_no_retry(
        tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/kills.db"
    study = _write(tmp_path, storage, n_trials=6,
                   distributions=[{"kind": "iid"}, {"kind": "dirichlet", "alpha": 0.1}])
    rng = random.Random(12)  # "random" kill times, the same on every run of the test
    proc = subprocess.Popen(_cli("run", study, "--synthetic-delay", "0.1"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for kill in range(12):
        deadline = time.monotonic() + 120
        while not _holds_a_running_trial(storage, proc.pid):
            if proc.poll() is not None:
                raise AssertionError(f"runner exited before kill {kill + 1}: "
                                     + (proc.stderr.read().decode() if proc.stderr else ""))
            assert time.monotonic() < deadline, f"no running trial before kill {kill + 1}"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))  # somewhere inside the trial
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc = subprocess.Popen(_cli("resume", study, "--synthetic-delay", "0.1"), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err.decode()
    lost = 0
    for label in ("iid", "dirichlet-0.1"):
        trials = optuna.load_study(study_name=f"crash/{label}", storage=storage).get_trials()
        assert_no_loss_no_duplicate(trials, n_trials=6)
        # A killed runner is not the trial's fault: no kill used up a retry.
        assert {t.user_attrs.get("attempt", 1) for t in trials} == {1}
        lost += sum(1 for t in trials if t.user_attrs.get("fail_reason") == "lease expired")
    assert lost >= 12  # every kill left at least one trial behind, and it was re-run
