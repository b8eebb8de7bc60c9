"""Issue 10, items 1, 2 and 12: the operator decides where trials run and what code they
run; a StartStudy/ResumeStudy client picks among that and cannot widen it.

Each test is an attack of the issue against a real optimizer server (and real trainer
workers) over gRPC, and shows the fixed behaviour.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest

from optimizer.service.api import optimizer_pb2 as pb
from optimizer.service.client import OptimizerClient
from optimizer.service.policy import OperatorPolicy
from optimizer.study.endpoints import TrainerEndpoint
from tests.optimizer.service.hostile import (
    Spy,
    assert_invalid,
    make_certificate,
    optimizer,
    raw_error,
    study_toml,
)
from tests.trainer.fakes import FakeTrial
from trainer.contract import TrialEvent, TrialResult, TrialSpec
from trainer.service.rpc import TRAINER_TOKEN_ENV
from trainer.service.server import ServerConfig, TrainerServer, create_server
from trainer.service.status import ACCEPTED_KEY

pytestmark = pytest.mark.timeout(60)


@contextmanager
def worker(config: ServerConfig, trial_fn: Callable[..., TrialResult]) -> Iterator[TrainerServer]:
    """A real trainer worker serving ``trial_fn``."""
    with create_server(config, trial_fn=trial_fn) as srv:
        yield srv


class Injector:
    """The issue's fake worker: every trial 'scores' 0.99. Records each call."""

    def __init__(self) -> None:
        self.calls: list[TrialSpec] = []

    def __call__(self, spec: TrialSpec, *, on_event: Callable[[TrialEvent], None] | None = None,
                 cancel: threading.Event | None = None) -> TrialResult:
        self.calls.append(spec)
        return TrialResult(pass_at_1=0.99, pass_at_k=0.99, k=spec.k, stderr=0.0, stderr_at_1=0.0,
                           n=spec.samples, problems=("HumanEval/0",), correct=(10,), timings={},
                           record={})


def _token_file(folder: Path, token: str) -> Path:
    path = folder / "trainer.token"
    path.write_text(token + "\n")
    return path


def test_item1_client_cannot_choose_endpoints_or_take_over_a_study(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRAINER_TOKEN_ENV, raising=False)
    token_file = _token_file(tmp_path, "trainer-secret")
    injector, spy = Injector(), Spy(tmp_path / "spy.sock")
    storage = f"sqlite:///{tmp_path}/prod.db"
    try:
        with worker(ServerConfig(port=0, token="trainer-secret"), FakeTrial(round_seconds=0)) \
                as legit, worker(ServerConfig(port=0), injector) as fake_worker:
            policy = OperatorPolicy(storage_root=tmp_path, endpoints=(
                TrainerEndpoint(address=legit.address, token_file=token_file),))
            with optimizer(policy, backend="grpc") as srv, OptimizerClient(srv.address) as client:
                # 1. Endpoints the operator did not name: a plain host, dns:, unix:, a fake worker.
                for target in (spy.address, f"dns:///{spy.address}", spy.unix,
                               fake_worker.address):
                    toml = study_toml("probe", trainer=f'endpoints = ["{target}"]')
                    error = raw_error(srv.address, "StartStudy",
                                      pb.StartStudyRequest(study_toml=toml))
                    trailing = assert_invalid(error, "trainer.endpoints")
                    assert trailing[ACCEPTED_KEY] == legit.address
                # 2. The study runs on the operator's worker, which gets the token.
                client.start_study(study_toml=study_toml("prod", storage=storage))
                assert client.wait("prod", timeout=40).distributions[0].complete == 2
                before = client.get_best("prod", "iid")
                # 3. The take-over: the same name re-run against the 0.99 worker, or redefined.
                attacks = [
                    (study_toml("prod", storage=storage,
                                trainer=f'endpoints = ["{fake_worker.address}"]'),
                     "trainer.endpoints"),
                    (study_toml("prod", storage=storage, trainer="timeout_s = 60"),
                     "trainer.timeout_s"),
                    (study_toml("prod", storage=f"sqlite:///{tmp_path}/other.db"), "storage"),
                ]
                for toml, field in attacks:
                    for method, request in (("StartStudy", pb.StartStudyRequest(study_toml=toml)),
                                            ("ResumeStudy",
                                             pb.ResumeStudyRequest(study_toml=toml))):
                        assert_invalid(raw_error(srv.address, method, request), field)
                assert client.get_best("prod", "iid") == before
                assert [s.name for s in client.list_studies()] == ["prod"]
        values = [t.value for t in optuna.load_study(study_name="prod/iid",
                                                     storage=storage).get_trials()]
        assert len(values) == 2 and all(v is not None and v < 0.9 for v in values)
        assert injector.calls == []  # the 0.99 worker never ran a trial
        assert spy.calls == []       # nothing (and so no token) ever reached the spy
    finally:
        spy.stop()


def test_item2_inprocess_runs_only_the_operators_trial_functions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system_calls: list[str] = []
    monkeypatch.setattr(os, "system", lambda command: system_calls.append(command) or 0)
    never_imported = [m for m in ("this", "unittest.__main__") if m not in sys.modules]
    allowed = "tests.trainer.fakes:fake_trial"
    policy = OperatorPolicy(trial_functions=(allowed,), storage_root=tmp_path)
    with optimizer(policy, backend="inprocess") as srv, OptimizerClient(srv.address) as client:
        for ref in ("this:x", "os:system", "unittest.__main__:main",
                    "tests.trainer.fakes:FakeTrial"):
            toml = study_toml("hostile", trainer=f'function = "{ref}"')
            for method, request in (("StartStudy", pb.StartStudyRequest(study_toml=toml)),
                                    ("ResumeStudy", pb.ResumeStudyRequest(study_toml=toml))):
                trailing = assert_invalid(raw_error(srv.address, method, request),
                                          "trainer.function")
                assert trailing[ACCEPTED_KEY] == allowed
        assert client.list_studies() == []
        # A study that names no function runs the operator's.
        client.start_study(study_toml=study_toml("allowed"))
        done = client.wait("allowed", timeout=40)
        assert done.state == pb.Study.COMPLETED and done.distributions[0].complete == 2
    assert system_calls == []
    assert [m for m in never_imported if m in sys.modules] == []


def test_item12_optimizer_reaches_a_tls_worker_with_the_operators_ca(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRAINER_TOKEN_ENV, raising=False)
    key, cert = make_certificate(tmp_path)
    token_file = _token_file(tmp_path, "tls-secret")
    fake = FakeTrial(round_seconds=0)
    config = ServerConfig(port=0, tls_cert=cert, tls_key=key, token="tls-secret")
    with worker(config, fake) as tls_worker:
        address = f"localhost:{tls_worker.port}"
        policy = OperatorPolicy(storage_root=tmp_path, endpoints=(
            TrainerEndpoint(address=address, root_ca=cert, token_file=token_file),))
        with optimizer(policy, backend="grpc") as srv, OptimizerClient(srv.address) as client:
            # The same worker under another name is not what the operator approved.
            toml = study_toml("tls", trainer=f'endpoints = ["127.0.0.1:{tls_worker.port}"]')
            assert_invalid(raw_error(srv.address, "StartStudy",
                                     pb.StartStudyRequest(study_toml=toml)), "trainer.endpoints")
            client.start_study(study_toml=study_toml("tls", trainer=f'endpoints = ["{address}"]'))
            done = client.wait("tls", timeout=40)
    assert done.state == pb.Study.COMPLETED, done.error
    assert done.distributions[0].complete == 2
    assert len(fake.calls) == 2  # both trials ran on the TLS worker, with its token
