"""The gRPC trainer service, end to end against a real server on a free port.

The trial function is the fake in tests/trainer/fakes.py (same contract as the
real one); the tiny-model test at the end uses the real ``trainer.trial``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.trainer.fakes import FakeTrial, fake_score
from trainer.contract import EvalProgressEvent, RoundEvent, TrialResult, TrialSpec
from trainer.errors import CapacityError, ConfigError, ModelNotFoundError, TrialCancelledError
from trainer.service import convert
from trainer.service.api import common_pb2, trainer_pb2, trainer_pb2_grpc
from trainer.service.client import TrainerClient
from trainer.service.server import ServerConfig, TrainerServer, create_server
from trainer.service.status import (
    AuthenticationError,
    DuplicateTrialError,
    RemoteInternalError,
    TrialDeadlineExceededError,
    WorkerUnavailableError,
)
from trainer.service.worker import TrialAccepted, WorkerPolicy

pytestmark = pytest.mark.timeout(60)

QUICK: dict[str, Any] = {"scaling_factor": 1.0, "participation": 0.5, "budget_mode": "rounds",
                         "rounds": 3, "problems": "4", "samples": 10, "k": 10}
# At 0.05 s per round this runs ~25 s unless something stops it.
LONG: dict[str, Any] = {**QUICK, "rounds": 500}
POLICY = WorkerPolicy(min_scaling_factor=0.25, max_scaling_factor=3.0,
                      allowed_models=("tiny-random", "smollm2-135m"), default_model="tiny-random")


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture(scope="module")
def fake() -> FakeTrial:
    return FakeTrial(round_seconds=0.05)


@pytest.fixture(scope="module")
def server(fake: FakeTrial) -> Iterator[TrainerServer]:
    srv = create_server(ServerConfig(port=0, capacity=1, policy=POLICY, budget_profile="test"),
                        trial_fn=fake)
    srv.start()
    yield srv
    srv.stop(grace=0)


@pytest.fixture
def client(server: TrainerServer, fake: FakeTrial) -> Iterator[TrainerClient]:
    fake.fail, fake.round_seconds = None, 0.05
    fake.started.clear()
    with TrainerClient(server.address, retries=0) as c:
        assert wait_until(lambda: c.get_info().idle == 1), "a previous test left the worker busy"
        yield c


def run_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


# ------------------------------------------------------------ full trial ----


def test_full_trial_streams_accepted_rounds_eval_and_result(client: TrainerClient,
                                                             server: TrainerServer) -> None:
    items = list(client.stream_trial({**QUICK, "scaling_factor": 1.5}, trial_id="full-1"))
    accepted, *middle, result = items
    assert isinstance(accepted, TrialAccepted)
    assert accepted.trial_id == "full-1" and accepted.worker == server.servicer.worker
    assert accepted.spec.model == "tiny-random"  # the worker's default model filled in
    rounds = [e for e in middle if isinstance(e, RoundEvent)]
    assert [r.round for r in rounds] == [1, 2, 3] and rounds[0].total_rounds == 3
    assert rounds[0].intermediate == pytest.approx(0.1) and rounds[1].intermediate is None
    assert rounds[0].update_norm == pytest.approx(1.5) and rounds[0].clients == (0, 1, 2, 3, 4)
    assert any(isinstance(e, EvalProgressEvent) for e in middle)
    assert isinstance(result, TrialResult)
    expected = fake_score(TrialSpec(**{**QUICK, "scaling_factor": 1.5}))
    assert result.pass_at_k == pytest.approx(expected) and result.k == 10 and result.n == 10
    assert result.problems == tuple(f"HumanEval/{i}" for i in range(4))
    assert len(result.correct) == 4 and result.timings["train"] == pytest.approx(0.15)
    assert result.record["nested"] == {"a": [1, 2]} and result.record["spec"]["rounds"] == 3


def test_run_trial_matches_in_process_call(client: TrainerClient) -> None:
    spec = TrialSpec(**{**QUICK, "model": "tiny-random", "scaling_factor": 0.8})
    events: list[Any] = []
    remote = client.run_trial(spec, on_event=events.append)
    local = FakeTrial(round_seconds=0.05)(spec)
    assert remote == local
    assert [type(e).__name__ for e in events].count("RoundEvent") == 3


# ---------------------------------------------------- cancel / deadline ----


def test_cancel_trial_mid_round_frees_worker(client: TrainerClient, fake: FakeTrial) -> None:
    thread, out = run_in_thread(lambda: client.run_trial(LONG, trial_id="long-1"))
    assert fake.started.wait(5)
    assert client.get_info().running_trials == ("long-1",)
    t0 = time.monotonic()
    assert client.cancel_trial("long-1") is True
    thread.join(5)
    assert isinstance(out.get("error"), TrialCancelledError), out
    assert "CancelTrial" in str(out["error"])
    assert client.get_info().busy == 0 and time.monotonic() - t0 < 3
    assert client.cancel_trial("long-1") is False  # idempotent once it stopped
    assert client.run_trial(QUICK).pass_at_k > 0  # the next trial runs


def test_client_cancel_event_stops_trial_on_worker(client: TrainerClient, fake: FakeTrial) -> None:
    cancel = threading.Event()
    before = fake.cancelled
    thread, out = run_in_thread(lambda: client.run_trial(LONG, cancel=cancel))
    assert fake.started.wait(5)
    cancel.set()
    thread.join(5)
    assert isinstance(out.get("error"), TrialCancelledError), out
    assert wait_until(lambda: client.get_info().idle == 1, 3)
    assert fake.cancelled == before + 1
    assert client.run_trial(QUICK).k == 10


def test_deadline_expiry_frees_worker(client: TrainerClient, fake: FakeTrial) -> None:
    before = fake.cancelled
    with pytest.raises(TrialDeadlineExceededError):
        client.run_trial(LONG, timeout=0.5)
    assert wait_until(lambda: client.get_info().idle == 1, 3)
    assert fake.cancelled == before + 1
    assert client.run_trial(QUICK).k == 10


def test_capacity_overflow_is_resource_exhausted(client: TrainerClient, fake: FakeTrial) -> None:
    thread, out = run_in_thread(lambda: client.run_trial(LONG, trial_id="hog"))
    assert fake.started.wait(5)
    with pytest.raises(CapacityError, match=r"busy: 1 of 1 .*hog"):
        client.run_trial(QUICK)
    with pytest.raises(DuplicateTrialError, match="already running"):
        client.run_trial(QUICK, trial_id="hog")
    info = client.get_info()
    assert (info.busy, info.idle, info.capacity) == (1, 0, 1)
    client.cancel_trial("hog")
    thread.join(5)
    assert isinstance(out.get("error"), TrialCancelledError)


# ------------------------------------------------------------ validation ----

MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("missing scaling factor", {"participation": 0.5}, "scaling_factor"),
    ("missing participation", {"scaling_factor": 1.0}, "participation"),
    ("s above worker max", {"scaling_factor": 3.5}, "scaling_factor"),
    ("s below worker min", {"scaling_factor": 0.1}, "scaling_factor"),
    ("s negative", {"scaling_factor": -1.0}, "scaling_factor"),
    ("s NaN", {"scaling_factor": math.nan}, "scaling_factor"),
    ("participation 0", {"participation": 0.0}, "participation"),
    ("participation > 1", {"participation": 1.5}, "participation"),
    ("unknown distribution", {"distribution": "zipf"}, "distribution"),
    ("alpha 0", {"distribution": "dirichlet", "alpha": 0.0}, "alpha"),
    ("alpha negative", {"alpha": -0.3}, "alpha"),
    ("rounds 0", {"budget_mode": "rounds", "rounds": 0}, "rounds"),
    ("client_steps negative", {"client_steps": -5}, "client_steps"),
    ("unknown budget mode", {"budget_mode": "epochs"}, "budget_mode"),
    ("samples < k", {"samples": 5, "k": 10}, "samples"),
    ("k 0", {"k": 0}, "k"),
    ("clients 0", {"clients": 0}, "clients"),
    ("unknown model", {"model": "gpt-9"}, "model"),
    ("learning rate inf", {"learning_rate": math.inf}, "learning_rate"),
    ("top_p 0", {"top_p": 0.0}, "top_p"),
    ("empty lora targets", {"lora_targets": "  "}, "lora_targets"),
    ("max_new_tokens 0", {"max_new_tokens": 0}, "max_new_tokens"),
    ("unknown dtype", {"dtype": "float16"}, "dtype"),
    ("unknown device", {"device": "tpu"}, "device"),
]


@pytest.mark.parametrize(("case", "overrides", "field"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_request_is_invalid_argument_naming_field(
        server: TrainerServer, client: TrainerClient, case: str, overrides: dict[str, Any],
        field: str) -> None:
    values = {**QUICK, **overrides}
    if case.startswith("missing"):
        values = dict(overrides)
    with grpc.insecure_channel(server.address) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        request = trainer_pb2.TrialRequest(spec=common_pb2.TrialSpec(**values))
        with pytest.raises(grpc.RpcError) as info:
            list(stub.RunTrial(request, timeout=5))
    error = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"{field}:")
    assert "accepted" in error.details()
    assert dict(error.trailing_metadata())["scalefed-field"] == field
    # The same request through the client raises ConfigError naming the field.
    with pytest.raises(ConfigError) as config_error:
        client.run_trial(values)
    assert config_error.value.field == field and config_error.value.accepted


def test_request_level_errors(server: TrainerServer, client: TrainerClient) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        for request, field in [
            (trainer_pb2.TrialRequest(), "spec"),
            (trainer_pb2.TrialRequest(trial_id="bad id!", spec=convert.spec_to_proto(QUICK)),
             "trial_id"),
        ]:
            with pytest.raises(grpc.RpcError) as info:
                list(stub.RunTrial(request, timeout=5))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details().startswith(f"{field}:")
        with pytest.raises(grpc.RpcError) as info:
            stub.CancelTrial(trainer_pb2.CancelTrialRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ConfigError, match="unknown field"):
        client.run_trial({**QUICK, "scaling": 1.0})  # rejected client-side, by name


def test_server_still_serves_after_bad_requests(client: TrainerClient) -> None:
    assert client.health() == "SERVING"
    assert client.run_trial(QUICK).pass_at_k == pytest.approx(fake_score(TrialSpec(**QUICK)))


# --------------------------------------------------------- server errors ----


def test_internal_failure_is_internal_and_worker_keeps_serving(client: TrainerClient,
                                                               fake: FakeTrial) -> None:
    fake.fail = RuntimeError("disk on fire")
    with pytest.raises(RemoteInternalError, match="RuntimeError: disk on fire") as info:
        client.run_trial(QUICK)
    assert info.value.code == grpc.StatusCode.INTERNAL
    fake.fail = ModelNotFoundError("no such checkpoint")
    with pytest.raises(ModelNotFoundError, match="no such checkpoint"):
        client.run_trial(QUICK)
    fake.fail = None
    assert client.get_info().idle == 1
    assert client.run_trial(QUICK).k == 10


# ------------------------------------------------- info, health, reflection ----


def test_get_info_reports_policy_and_load(client: TrainerClient, server: TrainerServer) -> None:
    info = client.get_info()
    assert info.model == "tiny-random" and info.default_problems == TrialSpec().problems
    assert (info.min_scaling_factor, info.max_scaling_factor) == (0.25, 3.0)
    assert info.allowed_models == ("tiny-random", "smollm2-135m")
    assert info.budget_profile == "test" and info.worker == server.servicer.worker
    assert (info.capacity, info.busy, info.idle, info.draining) == (1, 0, 1, False)
    assert info.version
    from trainer.devices import resolve_device, resolve_dtype

    assert info.devices == (resolve_device("auto"),)  # no --devices: where auto runs
    assert info.auto_dtype == resolve_dtype("auto", info.devices[0])


def test_devices_are_trial_slots_and_each_trial_runs_on_its_own() -> None:
    """``--devices cpu,cpu`` (what ``0,1`` is on a GPU host, testable here): the capacity is
    the device count, GetInfo lists them, a trial with device auto takes a free slot and
    runs with that device in its spec (and its accepted event), a device the worker does
    not serve is INVALID_ARGUMENT naming the field and changes nothing, and a full worker
    answers RESOURCE_EXHAUSTED."""
    fake = FakeTrial(round_seconds=0.05)
    config = ServerConfig(port=0, policy=POLICY, devices=("cpu", "cpu"))
    with create_server(config, trial_fn=fake) as srv, \
            TrainerClient(srv.address, retries=0) as c:
        info = c.get_info()
        assert (info.capacity, info.devices) == (2, ("cpu", "cpu"))
        threads = [run_in_thread(lambda i=i: c.run_trial(LONG, trial_id=f"t{i}")) for i in (0, 1)]
        assert wait_until(lambda: c.get_info().busy == 2)
        with pytest.raises(ConfigError, match="device: cuda:0 is not served") as bad:
            c.run_trial({**QUICK, "device": "cuda:0"})
        assert "accepted: auto, cpu" in str(bad.value)
        with pytest.raises(CapacityError):
            c.run_trial(QUICK)
        assert c.get_info().busy == 2 and len(fake.calls) == 2
        assert {spec.device for spec in fake.calls} == {"cpu"}
        for i in (0, 1):
            c.cancel_trial(f"t{i}")
        for thread, _ in threads:
            thread.join(5)
        accepted = [e for e in c.stream_trial(QUICK) if isinstance(e, TrialAccepted)]
        assert accepted and accepted[0].spec.device == "cpu"


def test_devices_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="devices: auto is not a device"):
        ServerConfig(port=0, devices=("auto",))
    with pytest.raises(ConfigError, match="capacity: 3 differs from the 2 devices"):
        ServerConfig(port=0, capacity=3, devices=("cpu", "cpu"))
    assert ServerConfig(port=0, capacity=2, devices=("cpu", "cpu")).devices == ("cpu", "cpu")


def test_health_and_reflection(server: TrainerServer, client: TrainerClient) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    assert client.health() == "SERVING"
    assert client.health(service="scalefed.v1.TrainerService") == "SERVING"
    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = database.get_services()
        assert "scalefed.v1.TrainerService" in services
        assert "grpc.health.v1.Health" in services
        file = database.FindFileContainingSymbol("scalefed.v1.TrainerService")
        assert file.name == "scalefed/v1/trainer.proto"


# ------------------------------------------------------------ auth, TLS ----


def test_bearer_token_required_except_for_health(fake: FakeTrial) -> None:
    config = ServerConfig(port=0, token="s3cret", policy=POLICY)
    with create_server(config, trial_fn=FakeTrial(round_seconds=0)) as srv:
        with TrainerClient(srv.address, retries=0) as anonymous:
            with pytest.raises(AuthenticationError, match="missing bearer token"):
                anonymous.get_info()
            with pytest.raises(AuthenticationError):
                anonymous.run_trial(QUICK)
            assert anonymous.health() == "SERVING"  # probes need no token, by design
        with (TrainerClient(srv.address, token="wrong", retries=0) as wrong,
              pytest.raises(AuthenticationError, match="invalid bearer token")):
            wrong.cancel_trial("x")
        with TrainerClient(srv.address, token="s3cret") as good:
            assert good.get_info().capacity == 1
            assert good.run_trial(QUICK).k == 10


def test_tls(tmp_path: Any) -> None:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; cannot make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30)
    config = ServerConfig(port=0, tls_cert=cert, tls_key=key, token="t", policy=POLICY)
    with create_server(config, trial_fn=FakeTrial(round_seconds=0)) as srv:
        target = f"localhost:{srv.port}"
        with TrainerClient(target, token="t", root_certificates=cert.read_bytes()) as secure:
            assert secure.run_trial(QUICK).k == 10
        with (TrainerClient(target, token="t", retries=0, call_timeout=2) as plain,
              pytest.raises(WorkerUnavailableError)):
            plain.get_info()


# -------------------------------------------------------------- shutdown ----


def test_graceful_stop_drains_then_cancels() -> None:
    fake = FakeTrial(round_seconds=0.05)
    srv = create_server(ServerConfig(port=0, policy=POLICY), trial_fn=fake)
    srv.start()
    with TrainerClient(srv.address, retries=0) as c:
        thread, out = run_in_thread(lambda: c.run_trial(LONG, trial_id="drained"))
        assert fake.started.wait(5)
        stopper = threading.Thread(target=srv.stop, kwargs={"grace": 1.0}, daemon=True)
        stopper.start()
        assert wait_until(lambda: c.health() == "NOT_SERVING", 2)
        info = c.get_info()
        assert info.draining and info.running_trials == ("drained",)
        with pytest.raises(WorkerUnavailableError, match="draining"):
            c.run_trial(QUICK)
        thread.join(10)
        stopper.join(10)
    assert isinstance(out.get("error"), TrialCancelledError), out
    assert "shutting down" in str(out["error"])
    assert not stopper.is_alive()


def test_cli_serve_stops_on_sigterm(tmp_path: Any) -> None:
    import os
    import signal
    import subprocess
    import sys

    token_file = tmp_path / "token"
    token_file.write_text("tok\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "optimizer.cli", "trainer", "serve", "--port", "0",
         "--trial-fn", "tests.trainer.fakes:fake_trial", "--token-file", str(token_file),
         "--max-scaling-factor", "2.5", "--grace", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[3])
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, line + (proc.stderr.read() if proc.stderr else "")
        address = line.split("listening on ")[1].split()[0]
        with TrainerClient(address, token="tok") as c:
            assert c.get_info().max_scaling_factor == 2.5
            assert c.run_trial(QUICK).k == 10
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


# ------------------------------------------------------- real tiny model ----


@pytest.mark.timeout(300)
def test_full_trial_on_tiny_model_end_to_end() -> None:
    try:
        from trainer.trial import run_trial
    except ImportError as exc:
        pytest.skip(f"the real trial function (trainer.trial.run_trial) is not built yet: {exc}")
    spec = {"model": "tiny-random", "scaling_factor": 1.0, "participation": 0.5, "clients": 2,
            "budget_mode": "rounds", "rounds": 1, "local_steps": 1, "batch_size": 2,
            "seq_len": 64, "max_examples": 16, "problems": "2", "samples": 2, "k": 2,
            "max_new_tokens": 8}
    with create_server(ServerConfig(port=0), trial_fn=run_trial) as srv, \
            TrainerClient(srv.address) as c:
        items = list(c.stream_trial(spec, timeout=300))
    assert isinstance(items[0], TrialAccepted)
    assert any(isinstance(i, RoundEvent) for i in items)
    result = items[-1]
    assert isinstance(result, TrialResult)
    assert result.k == 2 and result.n == 2 and len(result.problems) == 2
    assert 0.0 <= result.pass_at_1 <= result.pass_at_k <= 1.0


def test_serve_devices_flag_parses_indices_and_refuses_a_missing_gpu(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``--devices 0,1`` means cuda:0 and cuda:1; on a host without them the worker does
    not start and says which device is missing (exit 2, before binding a port)."""
    import argparse

    from optimizer.cli import main
    from trainer import devices
    from trainer.cli.worker import _devices

    assert _devices("0,1") == ("cuda:0", "cuda:1")
    assert _devices("cpu, cuda:3,cuda") == ("cpu", "cuda:3", "cuda:0")
    with pytest.raises(argparse.ArgumentTypeError, match="'gpu0' is not a device"):
        _devices("gpu0")
    monkeypatch.setattr(devices, "cuda_count", lambda: 0)
    assert main(["trainer", "serve", "--port", "0", "--devices", "0"]) == 2
    assert "device: cuda:0 is not available: this worker has no CUDA device" \
        in capsys.readouterr().err
