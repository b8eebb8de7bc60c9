"""Building and running a trainer worker: the gRPC server around TrainerServicer.

    server = create_server(ServerConfig(port=0, capacity=1), trial_fn=run_trial)
    port = server.start()
    ...
    server.stop()          # drain: NOT_SERVING, finish or cancel running trials

Health (grpc.health.v1) and reflection are always on. With a token, every
method except the health service needs ``authorization: Bearer <token>``;
health stays open so load balancers and orchestrators can probe without it.
"""

from __future__ import annotations

import hmac
import importlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from trainer.api.scalefed.v1 import trainer_pb2, trainer_pb2_grpc
from trainer.errors import ConfigError
from trainer.servicer import TrainerServicer
from trainer.trial import TrialFunction
from trainer.worker import TrialRunner, WorkerPolicy

log = logging.getLogger(__name__)

SERVICE_NAME: str = trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name
DEFAULT_TRIAL_FN = "trainer.experiment:run_trial"
_OPEN_METHOD_PREFIXES = (f"/{health.SERVICE_NAME}/",)


def _meta(help_text: str) -> dict[str, str]:
    return {"help": help_text}


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """How a trainer worker listens and what it accepts."""

    host: str = field(default="127.0.0.1", metadata=_meta("interface to bind; 0.0.0.0 to widen"))
    port: int = field(default=0, metadata=_meta("TCP port; 0 picks a free one"))
    capacity: int = field(default=1, metadata=_meta("trials run at once; more are rejected"))
    token: str | None = field(default=None, metadata=_meta("bearer token required from clients"))
    tls_cert: Path | None = field(default=None, metadata=_meta("PEM certificate chain (with tls_key)"))
    tls_key: Path | None = field(default=None, metadata=_meta("PEM private key (with tls_cert)"))
    policy: WorkerPolicy = field(default_factory=WorkerPolicy,
                                 metadata=_meta("scaling-factor range, allowed models, defaults"))
    budget_profile: str = field(default="default", metadata=_meta("budget profile name, reported"))
    worker_name: str | None = field(default=None, metadata=_meta("name in events; host:port if unset"))
    grace_seconds: float = field(default=30.0,
                                 metadata=_meta("on shutdown, how long running trials may finish"))
    spare_threads: int = field(default=8,
                               metadata=_meta("RPC threads beyond capacity (info, cancel, rejects)"))

    def __post_init__(self) -> None:
        check_listen_options(port=self.port, token=self.token, tls_cert=self.tls_cert,
                             tls_key=self.tls_key)
        if self.capacity < 1:
            raise ConfigError("capacity", f"must be >= 1, got {self.capacity}", accepted=">= 1")
        if self.spare_threads < 2:
            raise ConfigError("spare_threads", f"must be >= 2, got {self.spare_threads}",
                              accepted=">= 2")


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` as UNAUTHENTICATED."""

    def __init__(self, token: str, *, open_prefixes: tuple[str, ...] = _OPEN_METHOD_PREFIXES) -> None:
        self._expected = f"Bearer {token}".encode()
        self._open = open_prefixes

    def intercept_service(self, continuation: Callable[[Any], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = cast(str, getattr(handler_call_details, "method", ""))
        if method.startswith(self._open):
            return continuation(handler_call_details)
        metadata = dict(getattr(handler_call_details, "invocation_metadata", None) or ())
        given = metadata.get("authorization")
        if isinstance(given, str) and hmac.compare_digest(given.encode(), self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        message = ("missing bearer token: send metadata 'authorization: Bearer <token>'"
                   if given is None else "invalid bearer token")
        return _deny(handler, message)


def _deny(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that answers UNAUTHENTICATED."""

    def reject(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    )
    for attr, make in kinds:
        if getattr(handler, attr, None):
            return make(reject, request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)
    raise TypeError("unknown RPC handler type")


# ------------------------------------------------- shared by every scalefed server ----


def check_listen_options(*, port: int, token: str | None, tls_cert: Path | None,
                         tls_key: Path | None) -> None:
    """Validate the listening options every scalefed server takes (ConfigError naming the field)."""
    if not 0 <= port <= 65535:
        raise ConfigError("port", f"{port} is not a TCP port", accepted="0-65535")
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("tls_cert", "TLS needs both a certificate and a key",
                          accepted="both tls_cert and tls_key, or neither")
    if token is not None and not token.strip():
        raise ConfigError("token", "is empty", accepted="a non-empty string, or no token")


def auth_interceptors(token: str | None) -> list[grpc.ServerInterceptor]:
    """The bearer-token check when a token is configured (health stays open)."""
    return [BearerTokenInterceptor(token)] if token else []


def add_health_and_reflection(server: grpc.Server,
                              service_names: tuple[str, ...]) -> health.HealthServicer:
    """Register grpc.health.v1 and server reflection for ``service_names``."""
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return health_servicer


def set_serving(health_servicer: health.HealthServicer, service_names: tuple[str, ...]) -> None:
    """Mark the server ("") and each service SERVING."""
    for name in ("", *service_names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


def bind_port(server: grpc.Server, *, host: str, port: int, tls_cert: Path | None,
              tls_key: Path | None) -> int:
    """Add the (TLS or plaintext) listening port; ConfigError on field ``port`` if it cannot bind."""
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls_cert and tls_key:
            creds = grpc.ssl_server_credentials([(tls_key.read_bytes(), tls_cert.read_bytes())])
            bound = server.add_secure_port(bind, creds)
        else:
            bound = server.add_insecure_port(bind)
    except (OSError, RuntimeError) as exc:
        raise ConfigError("port", f"cannot bind {bind}: {exc}", accepted="a free port") from None
    if not bound:
        raise ConfigError("port", f"cannot bind {bind}", accepted="a free port")
    return int(bound)


def dial_address(host: str, port: int) -> str:
    """``host:port`` a client on this machine can dial for a server bound to ``host``."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_until_signal(*, start: Callable[[], None], stop: Callable[[], None],
                     on_repeat: Callable[[str], None] | None = None) -> None:
    """``start()``, wait for SIGTERM/SIGINT, then ``stop()``; a second signal calls
    ``on_repeat(signal name)`` (e.g. to cancel running work at once)."""
    requested = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if requested.is_set() and on_repeat is not None:
            on_repeat(signal.Signals(signum).name)
        requested.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        start()
        while not requested.wait(0.5):
            pass
        log.info("shutdown requested: draining")
        stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class TrainerServer:
    """A trainer worker: gRPC server, servicer, health and reflection."""

    def __init__(self, *, config: ServerConfig, trial_fn: TrialFunction) -> None:
        self.config = config
        self.runner = TrialRunner(trial_fn=trial_fn, capacity=config.capacity)
        self.servicer = TrainerServicer(runner=self.runner, policy=config.policy, worker="",
                                        budget_profile=config.budget_profile)
        threads = config.capacity + config.spare_threads
        # Concurrent RPCs are capped at the thread count so an overload is
        # refused at once instead of queueing behind running trials.
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="trainer-rpc"),
            interceptors=auth_interceptors(config.token), maximum_concurrent_rpcs=threads)
        trainer_pb2_grpc.add_TrainerServiceServicer_to_server(self.servicer, self._server)
        self.health = add_health_and_reflection(self._server, (SERVICE_NAME,))
        self.port = 0
        self._stop_lock = threading.Lock()
        self._stopped = False

    @property
    def address(self) -> str:
        """``host:port`` a client on this machine can dial."""
        return dial_address(self.config.host, self.port)

    def start(self) -> int:
        """Bind, start serving and return the bound port."""
        host = self.config.host
        port = bind_port(self._server, host=host, port=self.config.port,
                         tls_cert=self.config.tls_cert, tls_key=self.config.tls_key)
        self.port = port
        self.servicer.worker = self.config.worker_name or f"{socket.gethostname()}:{port}"
        self._server.start()
        set_serving(self.health, (SERVICE_NAME,))
        log.info("trainer worker %s listening on %s:%d (capacity %d, %s%s)", self.servicer.worker,
                 host, port, self.config.capacity, "TLS" if self.config.tls_cert else "plaintext",
                 ", token required" if self.config.token else "")
        return port

    def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, refuse new trials, let running ones finish for ``grace``
        seconds, cancel the rest, then stop the server. Idempotent."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        grace = self.config.grace_seconds if grace is None else grace
        self.runner.drain()
        self.health.enter_graceful_shutdown()
        running = self.runner.running_ids()
        if running:
            log.info("draining: waiting up to %.0f s for %s", grace, ", ".join(running))
        if not self.runner.wait_idle(grace):
            log.warning("grace period over: cancelling %s", ", ".join(self.runner.running_ids()))
            self.runner.cancel_all("the worker is shutting down")
            if not self.runner.wait_idle(10.0):
                log.error("trials still running after cancel: %s", self.runner.running_ids())
        self._server.stop(grace=2.0).wait()
        log.info("trainer worker stopped")

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return bool(self._server.wait_for_termination(timeout))

    def __enter__(self) -> Self:
        if not self.port:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop(grace=0.0)


def create_server(config: ServerConfig, *, trial_fn: TrialFunction) -> TrainerServer:
    """A trainer worker, not yet started (call ``start()`` or use it as a context manager)."""
    return TrainerServer(config=config, trial_fn=trial_fn)


def load_trial_function(ref: str = DEFAULT_TRIAL_FN) -> TrialFunction:
    """Import ``module:function`` (the real one is ``trainer.experiment:run_trial``)."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError("trial_fn", f"{ref!r} is not module:function",
                          accepted="module:function, e.g. " + DEFAULT_TRIAL_FN)
    # Like other module:function loaders, resolve modules from the working directory too.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError("trial_fn", f"cannot import {module_name}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError("trial_fn", f"{module_name} has no callable {attr!r}")
    return cast(TrialFunction, fn)


def serve(config: ServerConfig, *, trial_fn: TrialFunction) -> int:
    """Run a worker until SIGTERM/SIGINT, then drain gracefully. A second signal
    cancels running trials at once. Returns an exit code."""
    server = create_server(config, trial_fn=trial_fn)

    def start() -> None:
        port = server.start()
        print(f"scalefed trainer listening on {server.address} (port {port})", flush=True)

    run_until_signal(start=start, stop=server.stop, on_repeat=lambda name: server.runner.cancel_all(
        f"the worker got {name} again"))
    return 0
