"""Helpers for the hostile-client tests: small studies, raw calls, a spy gRPC server.

Every attack runs against a real OptimizerService (and real trainer workers) over gRPC.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from optimizer.service.api import optimizer_pb2_grpc
from optimizer.service.policy import OperatorPolicy
from optimizer.service.server import OptimizerServer, OptimizerServerConfig, create_server
from tests.optimizer.conftest import study_toml as shared_study_toml
from trainer.service.status import ACCEPTED_KEY, FIELD_KEY

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def study_toml(name: str, *, storage: str = "", trainer: str = "", sampler: str = "",
               n_trials: int = 2, top: str = "") -> str:
    """A one-distribution study of ``n_trials`` 2-round trials (fast on every backend);
    ``trainer`` adds raw lines to ``[trainer]``, ``sampler`` replaces ``[sampler]``'s body."""
    # The [trainer] body stays raw text: test_bounds removes its heartbeat/lease lines.
    trainer_body = "heartbeat_s = 1.0\nlease_s = 3.0\nmax_retries = 0\n" + trainer
    return shared_study_toml(
        name=name, n_trials=n_trials, storage=storage, top=top,
        profile={"problems": "4", "samples": 10, "clients": 10, "budget_mode": "rounds",
                 "rounds": 2},
        sections={"trainer": trainer_body, "sampler": sampler or "n_startup_trials = 2",
                  "stop": {"enabled": False}})


@contextmanager
def optimizer(policy: OperatorPolicy, *, backend: str = "synthetic") -> Iterator[OptimizerServer]:
    """A real optimizer server on a free port with the operator's ``policy``."""
    server = create_server(OptimizerServerConfig(port=0, backend=backend, policy=policy))
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=0)


def raw_error(address: str, method: str, request: Any) -> grpc.RpcError:
    """Call ``method`` with a raw stub and return the error it must fail with."""
    with grpc.insecure_channel(address) as channel:
        stub = optimizer_pb2_grpc.OptimizerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            getattr(stub, method)(request, timeout=20)
    return info.value  # type: ignore[return-value]


def assert_invalid(error: grpc.RpcError, field: str) -> dict[str, str]:
    """INVALID_ARGUMENT naming ``field`` with what is accepted; returns the trailers."""
    assert error.code() == INVALID, (error.code(), error.details())
    trailing = {k: v if isinstance(v, str) else v.decode()
                for k, v in (error.trailing_metadata() or ())}
    assert trailing.get(FIELD_KEY) == field, error.details()
    assert trailing.get(ACCEPTED_KEY), error.details()
    return trailing


class Spy:
    """A gRPC server that serves nothing and records every call that reaches it, with its
    metadata (so a test sees whether a bearer token was ever sent to it)."""

    def __init__(self, unix_socket: Path) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()
        spy = self

        class Recorder(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails) -> None:
                metadata = dict(getattr(details, "invocation_metadata", None) or ())
                with spy._lock:
                    spy.calls.append((str(getattr(details, "method", "")), metadata))

        from concurrent import futures

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                                   handlers=[Recorder()])
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.unix = f"unix://{unix_socket}"
        self._server.add_insecure_port(self.unix)
        self._server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.stop(grace=0).wait()


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (skips without openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; cannot make a test certificate")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60)
    return key, cert
