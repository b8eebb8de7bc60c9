"""GrpcBackend against a real TrainerService, and the shared backend suite.

The same tiny study run in-process over tests/trainer/fakes.py's fake trial function
and over gRPC against a trainer worker serving that same fake must store identical
trials; and each gRPC failure must reach the runner as the right exception.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from optimizer.study.backends import BackendError, GrpcBackend, InProcessBackend, TrialBackend
from optimizer.study.manager import run_study
from tests.optimizer.conftest import assert_no_loss_no_duplicate, small_study
from tests.trainer.fakes import FakeTrial, fake_score
from trainer.contract import TrialSpec
from trainer.errors import ConfigError, TrialCancelledError
from trainer.service.server import ServerConfig, TrainerServer, create_server
from trainer.service.worker import WorkerPolicy

pytestmark = pytest.mark.timeout(60)

PARAMS: dict[str, Any] = {"scaling_factor": 1.5, "participation": 0.5, "model": "tiny-random",
                          "budget_mode": "rounds", "rounds": 3, "problems": "4", "samples": 10,
                          "k": 10}


@pytest.fixture(scope="module")
def fake() -> FakeTrial:
    return FakeTrial(round_seconds=0.01)


@pytest.fixture(scope="module")
def worker(fake: FakeTrial) -> Iterator[TrainerServer]:
    srv = create_server(ServerConfig(port=0, capacity=1, policy=WorkerPolicy(max_scaling_factor=5.0)),
                        trial_fn=fake)
    srv.start()
    yield srv
    srv.stop(grace=0)


@pytest.fixture
def backend(worker: TrainerServer, fake: FakeTrial) -> Iterator[GrpcBackend]:
    fake.fail, fake.round_seconds = None, 0.01
    b = GrpcBackend(worker.address, retries=0)
    yield b
    b.close()


def run(b: TrialBackend, params: dict[str, Any], **kwargs: Any) -> tuple[Any, list[Any]]:
    rounds: list[tuple[int, float]] = []
    result = b.run(params, on_round=lambda r, v: rounds.append((r, v)), **kwargs)
    return result, rounds


# -------------------------------------------------------- shared suite ----


def test_one_trial_is_identical_in_process_and_over_grpc(backend: GrpcBackend) -> None:
    local, local_rounds = run(InProcessBackend(FakeTrial(round_seconds=0.0)), PARAMS)
    remote, remote_rounds = run(backend, PARAMS)
    assert remote == local
    assert remote.pass_at_k == pytest.approx(fake_score(TrialSpec.from_dict(PARAMS)))
    # Round values: the intermediate score where the trainer has one, else -train_loss.
    assert remote_rounds == local_rounds == [(1, pytest.approx(0.1)), (2, -1.0),
                                              (3, pytest.approx(0.3))]


def _study_run(backends: list[TrialBackend], storage: str) -> list[optuna.trial.FrozenTrial]:
    cfg = small_study(storage=storage, n_trials=5, startup=4, problems="4")
    run_study(cfg, backends, resume=False)
    trials = optuna.load_study(study_name="t/iid", storage=storage).get_trials()
    assert_no_loss_no_duplicate(trials, n_trials=5)
    return trials


def test_same_study_gives_identical_trials_in_process_and_over_grpc(
        backend: GrpcBackend, tmp_path: Path) -> None:
    local = _study_run([InProcessBackend(FakeTrial(round_seconds=0.0))],
                       f"sqlite:///{tmp_path / 'local.db'}")
    remote = _study_run([backend], f"sqlite:///{tmp_path / 'remote.db'}")
    assert len(local) == len(remote) == 5
    for a, b in zip(local, remote, strict=True):
        assert (a.number, a.state, a.params, a.value) == (b.number, b.state, b.params, b.value)
        assert a.intermediate_values == b.intermediate_values
        assert a.user_attrs["stderr"] == b.user_attrs["stderr"]
        assert a.user_attrs["result"]["n"] == b.user_attrs["result"]["n"]
        # the full run record, with every trial parameter, is stored with the result
        assert a.user_attrs["record"] == b.user_attrs["record"]
        assert a.user_attrs["record"]["spec"]["scaling_factor"] == a.params["scaling_factor"]
    assert {t.user_attrs["result"]["backend"] for t in remote} == {backend.name}


# ----------------------------------------------------------- error mapping ----


def test_worker_failure_is_a_backend_error(backend: GrpcBackend, fake: FakeTrial,
                                           worker: TrainerServer) -> None:
    fake.fail = RuntimeError("boom")
    with pytest.raises(BackendError, match="boom"):
        backend.run(PARAMS)
    fake.fail = None
    assert backend.run(PARAMS).n == 10  # the worker still serves


def test_invalid_argument_is_a_config_error_naming_the_field(backend: GrpcBackend) -> None:
    with pytest.raises(ConfigError, match="rejected by") as info:
        backend.run({**PARAMS, "scaling_factor": 9.0})  # outside the worker's [0.1, 5.0]
    assert info.value.field == "scaling_factor" and info.value.accepted


def test_cancel_is_a_cancelled_trial(backend: GrpcBackend, fake: FakeTrial) -> None:
    fake.round_seconds = 0.05
    cancel = threading.Event()
    fake.started.clear()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    with pytest.raises(TrialCancelledError):
        backend.run({**PARAMS, "rounds": 400}, cancel=cancel)
    timer.cancel()


def test_deadline_is_a_backend_error(worker: TrainerServer, fake: FakeTrial) -> None:
    fake.round_seconds = 0.05
    b = GrpcBackend(worker.address, retries=0, timeout_s=0.3)
    with pytest.raises(BackendError, match="DeadlineExceeded|deadline"):
        b.run({**PARAMS, "rounds": 400})
    b.close()


def test_unreachable_worker_is_a_backend_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = GrpcBackend(f"127.0.0.1:{port}", retries=0)
    with pytest.raises(BackendError, match="Unavailable"):
        b.run(PARAMS)
    b.close()


def test_busy_worker_is_retried_then_a_backend_error(worker: TrainerServer, fake: FakeTrial,
                                                     backend: GrpcBackend) -> None:
    fake.round_seconds = 0.05
    cancel = threading.Event()
    hog = threading.Thread(target=lambda: _swallow(backend, cancel), daemon=True)
    fake.started.clear()
    hog.start()
    assert fake.started.wait(5)
    impatient = GrpcBackend(worker.address, retries=0, busy_wait_s=0.6)
    with pytest.raises(BackendError, match="still busy"):
        impatient.run(PARAMS)
    cancel.set()
    hog.join(5)
    impatient.close()


def _swallow(b: GrpcBackend, cancel: threading.Event) -> None:
    try:
        b.run({**PARAMS, "rounds": 400}, cancel=cancel)
    except TrialCancelledError:
        pass


def test_missing_token_is_a_config_error(fake: FakeTrial) -> None:
    config = ServerConfig(port=0, token="s3cret")
    with create_server(config, trial_fn=fake) as srv:
        bare = GrpcBackend(srv.address, token="", retries=0)
        with pytest.raises(ConfigError) as info:
            bare.run(PARAMS)
        assert info.value.field == "trainer.token"
        good = GrpcBackend(srv.address, token="s3cret", retries=0)
        assert good.run(PARAMS).n == 10
        bare.close()
        good.close()
