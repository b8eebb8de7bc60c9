"""The OptimizerService end to end: a real server on a free port, synthetic trainer, SQLite in tmp."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import optuna
import pytest
from optuna.trial import TrialState

from optimizer.service import convert
from optimizer.service.api import optimizer_pb2 as pb
from optimizer.service.api import optimizer_pb2_grpc
from optimizer.service.client import OptimizerClient
from optimizer.service.errors import StudyNotFoundError, StudyRunningError
from optimizer.service.policy import OperatorPolicy
from optimizer.service.server import OptimizerServer, OptimizerServerConfig, create_server
from optimizer.study.backends import SyntheticBackend
from optimizer.study.manager import StudyManager, backends_for
from optimizer.study.storage import study_noise
from optimizer.study.studyfile import StudyConfig
from tests.optimizer.conftest import study_toml as shared_study_toml
from trainer.errors import ConfigError
from trainer.service.status import FIELD_KEY, AuthenticationError

pytestmark = pytest.mark.timeout(60)
SERVICE = "scalefed.v1.OptimizerService"
ROOT = Path(__file__).resolve().parents[3]


def study_toml(name: str, storage: str, *, n_trials: int = 5, startup: int = 4) -> str:
    """Both distributions of the quickstart at its CPU evaluation size on the tiny model."""
    return shared_study_toml(
        name=name, seed=0, n_trials=n_trials, storage=storage,
        distributions=[{"kind": "iid"}, {"kind": "dirichlet", "alpha": 0.1}],
        profile={"problems": "40", "samples": 10, "clients": 10},
        sections={"trainer": {"heartbeat_s": 1.0, "lease_s": 3.0},
                  "sampler": {"n_startup_trials": startup}, "stop": {"enabled": False}})


def _factory(cfg: StudyConfig) -> list[Any]:
    # Studies named slow-* run 0.05 s per simulated round, so a test can stop them mid-way.
    delay = 0.05 if cfg.name.startswith("slow") else 0.0
    return backends_for(cfg, "synthetic", synthetic=SyntheticBackend(delay_s=delay))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OptimizerServer]:
    # The operator allows storage and study files under pytest's temporary directory.
    tmp = tmp_path_factory.getbasetemp()
    policy = OperatorPolicy(storage_root=tmp, study_dirs=(ROOT / "studies", tmp))
    srv = create_server(OptimizerServerConfig(port=0, backend="synthetic", policy=policy),
                        manager=StudyManager(backend_factory=_factory))
    srv.start()
    yield srv
    srv.stop(grace=0)


@pytest.fixture
def client(server: OptimizerServer) -> Iterator[OptimizerClient]:
    with OptimizerClient(server.address, retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def finished(server: OptimizerServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A study started over gRPC from a file in tmp and run to the end (both distributions)."""
    tmp = tmp_path_factory.mktemp("svc")
    storage = f"sqlite:///{tmp / 'svc.db'}"
    path = tmp / "svc.toml"
    path.write_text(study_toml("svc", storage, n_trials=4))
    with OptimizerClient(server.address) as c:
        started = c.start_study(study_file=str(path))
        assert started.name == "svc" and started.storage == storage
        done = c.wait("svc", timeout=40)
    return {"storage": storage, "path": path, "done": done}


def stored(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# ----------------------------------------------------------- happy paths ----


def test_get_best_over_grpc_matches_the_manager_and_storage(
        finished: dict[str, Any], client: OptimizerClient, server: OptimizerServer) -> None:
    assert finished["done"].state == pb.Study.COMPLETED and not finished["done"].error
    for label in ("iid", "dirichlet-0.1"):
        reply = client.get_best("svc", label)
        expected = server.manager.best("svc", label)
        assert reply.exists and reply.study_name == f"svc/{label}"
        # Same GP, same data, same seed: the answer over the wire is the manager's, exactly.
        assert convert.answer_from_proto(reply) == expected.answer
        assert expected.answer is not None and expected.answer.predicted is not None
        pred = expected.answer.predicted
        assert reply.scaling_factor == pred.params["scaling_factor"]
        assert reply.participation == pred.params["participation"]
        assert reply.predicted.lower <= reply.predicted.mean <= reply.predicted.upper
        assert reply.predicted.sd > 0
        trials = [t for t in stored(finished["storage"], f"svc/{label}")
                  if t.state == TrialState.COMPLETE]
        assert reply.trials_used == len(trials) == 4
        best = max(trials, key=lambda t: float(t.value or 0.0))
        assert reply.observed_best.number == best.number
        assert reply.observed_best.value == best.value
        # The +/- is the study's noise model (trial vs trial), not the SE over problems,
        # which is mostly the between-problem spread that every trial shares.
        noise = study_noise(trials)
        assert noise is not None and reply.noise_sd == reply.observed_best.stderr
        assert reply.observed_best.stderr == pytest.approx(noise.trial_sd)
        assert reply.observed_best.stderr < best.user_attrs["stderr"]
        assert convert.params_from_proto(reply.observed_best.params) == best.params


def test_list_and_get_study_report_progress_and_trials(finished: dict[str, Any],
                                                       client: OptimizerClient) -> None:
    listed = {s.name: s for s in client.list_studies()}
    assert listed["svc"].state == pb.Study.COMPLETED and not listed["svc"].running
    assert all(not d.trials for d in listed["svc"].distributions)  # summaries only
    study = client.get_study("svc", include_trials=True)
    assert [d.label for d in study.distributions] == ["iid", "dirichlet-0.1"]
    for dist in study.distributions:
        assert dist.exists and dist.n_trials == 4 and dist.complete == 4
        assert dist.states["COMPLETE"] == 4
        truth = {t.number: t for t in stored(finished["storage"], dist.study_name)}
        assert sorted(t.number for t in dist.trials) == sorted(truth)
        for t in dist.trials:
            assert t.state == truth[t.number].state.name
            assert t.value == truth[t.number].value
            assert convert.params_from_proto(t.params) == truth[t.number].params
            assert dict(t.intermediate) == truth[t.number].intermediate_values
            assert t.intermediate  # the synthetic trainer reports every round


def test_stop_then_resume_by_name(client: OptimizerClient, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'slow.db'}"
    text = study_toml("slow-stop", storage, n_trials=3, startup=3)  # n_startup_trials <= n_trials
    client.start_study(study_toml=text)
    assert wait_until(lambda: client.get_study("slow-stop").distributions[0].complete >= 1)
    with pytest.raises(StudyRunningError, match="already running"):
        client.start_study(study_toml=text)
    stopped = client.stop_study("slow-stop", wait=True)
    assert not stopped.running and stopped.state == pb.Study.IDLE
    states = {t.state for t in stored(storage, "slow-stop/iid")}
    assert TrialState.RUNNING not in states  # cancelled trials were re-queued, none left running
    assert client.stop_study("slow-stop").state == pb.Study.IDLE  # idempotent
    resumed = client.resume_study("slow-stop")
    assert resumed.name == "slow-stop"
    done = client.wait("slow-stop", timeout=40)
    assert done.state == pb.Study.COMPLETED
    for dist in done.distributions:
        assert dist.complete == 3
        trials = stored(storage, dist.study_name)
        assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.FAIL,
                                             TrialState.PRUNED}


def test_overrides_apply(client: OptimizerClient, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'ov.db'}"
    client.start_study(study_toml=study_toml("ov", "sqlite:///elsewhere.db", n_trials=9),
                       storage=storage, n_trials=1)
    done = client.wait("ov", timeout=30)
    assert done.storage == storage
    assert [d.complete for d in done.distributions] == [1, 1]
    assert [d.n_trials for d in done.distributions] == [1, 1]


def test_health_and_reflection(server: OptimizerServer, client: OptimizerClient) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    assert client.health() == "SERVING"
    assert client.health(service=SERVICE) == "SERVING"
    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = database.get_services()
        assert SERVICE in services and "grpc.health.v1.Health" in services
        assert database.FindFileContainingSymbol(SERVICE).name == "scalefed/v1/optimizer.proto"


# ------------------------------------------------------------ bad requests ----

BAD_TOML_CASES = [
    ("syntax", "name = \n", "study_toml", "invalid TOML"),
    ("unknown key", 'bogus = 1\n', "bogus", "unknown key"),
    ("log low <= 0", None, "space.scaling_factor.low", "log scale"),
    ("bad kind", "iid", "distributions[0].kind", "unknown kind"),
]


def _bad_toml(case: str, text: str | None, tmp: Path) -> str:
    good = study_toml("bad", f"sqlite:///{tmp / 'bad.db'}")
    if case == "unknown key":
        return str(text) + good
    if case == "log low <= 0":
        return good.replace("low = 0.25", "low = -1.0")
    if case == "bad kind":
        return good.replace('{ kind = "iid" }', '{ kind = "uniform" }')
    return str(text)


@pytest.mark.parametrize(("case", "text", "field", "message"), BAD_TOML_CASES,
                         ids=[c[0] for c in BAD_TOML_CASES])
def test_malformed_study_toml_names_the_field(client: OptimizerClient, tmp_path: Path, case: str,
                                              text: str | None, field: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        client.start_study(study_toml=_bad_toml(case, text, tmp_path))
    assert info.value.field == field


def _raw(server: OptimizerServer, method: str, request: Any) -> grpc.RpcError:
    with grpc.insecure_channel(server.address) as channel:
        stub = optimizer_pb2_grpc.OptimizerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            getattr(stub, method)(request, timeout=10)
    return info.value  # type: ignore[return-value]


INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
RAW_CASES: list[tuple[str, str, Any, grpc.StatusCode, str, str | None]] = [
    ("no source", "StartStudy", pb.StartStudyRequest(), INVALID, "study source is required",
     "study_file"),
    ("missing file", "StartStudy", pb.StartStudyRequest(study_file="/nonexistent/x.toml"),
     INVALID, "no such file", "study_file"),
    ("n_trials 0", "StartStudy", pb.StartStudyRequest(
        study_file="studies/quickstart.toml", overrides=pb.StudyOverrides(n_trials=0)),
     INVALID, "must be >= 1", "overrides.n_trials"),
    ("bad storage", "StartStudy", pb.StartStudyRequest(
        study_file="studies/quickstart.toml", overrides=pb.StudyOverrides(storage="mysql://x")),
     INVALID, "unsupported URL", "overrides.storage"),
    ("get: no study", "GetStudy", pb.GetStudyRequest(), INVALID, "is required", "study"),
    ("get: unknown study", "GetStudy", pb.GetStudyRequest(study="nope"), NOT_FOUND,
     "unknown study 'nope'", None),
    ("best: unknown study", "GetBest", pb.GetBestRequest(study="nope", distribution="iid"),
     NOT_FOUND, "unknown study 'nope'", None),
    ("best: unknown distribution", "GetBest", pb.GetBestRequest(study="svc", distribution="x"),
     INVALID, "accepted: iid, dirichlet-0.1", "distribution"),
    ("best: no distribution", "GetBest", pb.GetBestRequest(study="svc"), INVALID,
     "is required (accepted: iid, dirichlet-0.1)", "distribution"),
    ("best: no study", "GetBest", pb.GetBestRequest(distribution="iid"), INVALID, "is required",
     "study"),
    ("stop: unknown study", "StopStudy", pb.StopStudyRequest(study="nope"), NOT_FOUND,
     "unknown study", None),
    ("stop: no study", "StopStudy", pb.StopStudyRequest(), INVALID, "is required", "study"),
    ("resume: unknown name", "ResumeStudy", pb.ResumeStudyRequest(study="nope"), NOT_FOUND,
     "unknown study 'nope'", None),
    ("resume: no source", "ResumeStudy", pb.ResumeStudyRequest(), INVALID,
     "study source is required", "study_file"),
]


@pytest.mark.parametrize(("case", "method", "request_msg", "code", "message", "field"), RAW_CASES,
                         ids=[c[0] for c in RAW_CASES])
def test_bad_requests_get_the_right_status(server: OptimizerServer, finished: dict[str, Any],
                                           case: str, method: str, request_msg: Any,
                                           code: grpc.StatusCode, message: str,
                                           field: str | None) -> None:
    error = _raw(server, method, request_msg)
    assert error.code() == code, error.details()
    assert message in (error.details() or "")
    trailing = dict(error.trailing_metadata() or ())
    assert trailing.get(FIELD_KEY) == field


def test_resume_of_a_study_never_stored_is_not_found(client: OptimizerClient,
                                                      tmp_path: Path) -> None:
    with pytest.raises(StudyNotFoundError, match="no study 'fresh' stored"):
        client.resume_study(study_toml=study_toml("fresh", f"sqlite:///{tmp_path / 'f.db'}"))
    with pytest.raises(StudyNotFoundError):
        client.get_best("fresh", "iid")  # a refused resume registers nothing
    assert client.health() == "SERVING"


# ------------------------------------------------------------------- auth ----


def test_token_required_except_for_health() -> None:
    config = OptimizerServerConfig(port=0, token="s3cret", backend="synthetic")
    with create_server(config) as srv:
        with OptimizerClient(srv.address, retries=0) as anonymous:
            with pytest.raises(AuthenticationError, match="missing bearer token"):
                anonymous.list_studies()
            assert anonymous.health() == "SERVING"
        with OptimizerClient(srv.address, token="wrong", retries=0) as wrong, \
                pytest.raises(AuthenticationError, match="invalid bearer token"):
            wrong.list_studies()
        with OptimizerClient(srv.address, token="s3cret") as good:
            assert good.list_studies() == []


def test_scalefed_serve_command_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0k\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "optimizer.cli", "serve", "--port", "0", "--backend", "synthetic",
         "--token-file", str(token)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"listening on (\S+) ", line)
        assert match, line + (proc.stderr.read() if proc.stderr else "")
        with OptimizerClient(match.group(1), token="t0k") as c:
            assert c.health(service=SERVICE) == "SERVING"
            assert c.list_studies() == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
