"""gRPC plumbing shared by every scalefed service and client: listening options,
bearer tokens, TLS, health and reflection, the server and client skeletons.

Nothing here knows a scalefed message: the trainer service and the optimizer
service each add their servicer and stub on top.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from trainer.errors import ConfigError
from trainer.helptext import meta

log = logging.getLogger(__name__)
T = TypeVar("T")
_OPEN_METHOD_PREFIXES = (f"/{health.SERVICE_NAME}/",)
# Where each service's bearer token comes from when no flag gives it (keeps it out of `ps`).
TRAINER_TOKEN_ENV = "SCALEFED_TRAINER_TOKEN"
OPTIMIZER_TOKEN_ENV = "SCALEFED_OPTIMIZER_TOKEN"


# ------------------------------------------------------------------ tokens ----


def read_token(args: argparse.Namespace, env_var: str) -> str | None:
    """The bearer token from --token-file, --token or ``env_var`` (in that order)."""
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError("--token-file", f"cannot read {args.token_file}: {exc}") from None
        if not token:
            raise ConfigError("--token-file", f"{args.token_file} is empty",
                              accepted="a file holding the token")
        return token
    return args.token or os.environ.get(env_var) or None


def add_token_args(parser: argparse.ArgumentParser, env_var: str) -> None:
    """``--token`` / ``--token-file`` (mutually exclusive; ``env_var`` as the fallback)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--token", help=f"bearer token (or --token-file, or ${env_var})")
    group.add_argument("--token-file", type=Path, help="file holding the bearer token")


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the bearer token, if any."""
    return (("authorization", f"Bearer {token}"),) if token else ()


# ------------------------------------------------------------------ server ----


@dataclass(frozen=True, kw_only=True)
class ListenConfig:
    """How a scalefed server listens: the options every service shares."""

    host: str = field(default="127.0.0.1", metadata=meta("interface to bind; 0.0.0.0 to widen"))
    port: int = field(default=0, metadata=meta("TCP port; 0 picks a free one"))
    token: str | None = field(default=None, metadata=meta("bearer token required from clients"))
    tls_cert: Path | None = field(default=None, metadata=meta("PEM certificate chain (with tls_key)"))
    tls_key: Path | None = field(default=None, metadata=meta("PEM private key (with tls_cert)"))

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("port", f"{self.port} is not a TCP port", accepted="0-65535")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert", "TLS needs both a certificate and a key",
                              accepted="both tls_cert and tls_key, or neither")
        if self.token is not None and not self.token.strip():
            raise ConfigError("token", "is empty", accepted="a non-empty string, or no token")

    @property
    def security(self) -> str:
        """``TLS``/``plaintext`` and whether a token is required, for start-up logs."""
        return ("TLS" if self.tls_cert else "plaintext") + (", token required" if self.token else "")

    def exposure_warning(self) -> str | None:
        """What is unsafe about listening beyond this machine as configured (None if nothing)."""
        if is_loopback(self.host):
            return None
        if not self.token:
            return (f"listening on {self.host} without a bearer token: anyone who can reach "
                    "this port can call every method; set --token-file (and TLS)")
        if not self.tls_cert:
            return (f"listening on {self.host} without TLS: the bearer token and all data "
                    "travel in plaintext; set --tls-cert and --tls-key")
        return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` only takes connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a wildcard-free host name or "": assume it is reachable
        return False


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


def bind_port(server: grpc.Server, config: ListenConfig) -> int:
    """Add the (TLS or plaintext) listening port; ConfigError on field ``port`` if it cannot bind."""
    host, port = config.host, config.port
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if config.tls_cert and config.tls_key:
            creds = grpc.ssl_server_credentials(
                [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())])
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


class ServiceServer:
    """A gRPC server for one scalefed service: thread pool, token check, health and
    reflection. Subclasses register their servicer in ``__init__`` and may extend
    ``stop``; ``start`` binds and marks every service SERVING."""

    def __init__(self, *, config: ListenConfig, service_name: str, threads: int,
                 thread_prefix: str, maximum_concurrent_rpcs: int | None = None) -> None:
        self.config = config
        self.service_name = service_name
        interceptors = [BearerTokenInterceptor(config.token)] if config.token else []
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=thread_prefix),
            interceptors=interceptors, maximum_concurrent_rpcs=maximum_concurrent_rpcs)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server)
        self.port = 0

    @property
    def address(self) -> str:
        """``host:port`` a client on this machine can dial."""
        return dial_address(self.config.host, self.port)

    @property
    def listen_address(self) -> str:
        """``host:port`` as bound (``0.0.0.0:port`` when listening on every interface)."""
        host = self.config.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def startup_line(self, service: str, *, detail: str = "") -> str:
        """The line a server prints once it listens: the address it really bound
        (``detail`` is added inside the parentheses, e.g. ``backend grpc``)."""
        line = f"scalefed {service} listening on {self.listen_address} (port {self.port}"
        if detail:
            line += f", {detail}"
        if self.listen_address != self.address:
            line += f"; from this machine dial {self.address}"
        return line + ")"

    def start(self) -> int:
        """Bind, start serving and return the bound port."""
        self.port = bind_port(self._server, self.config)
        warning = self.config.exposure_warning()
        if warning:
            log.warning("%s", warning)
        self._bound(self.port)
        self._server.start()
        for name in ("", self.service_name):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    def _bound(self, port: int) -> None:
        """Called with the bound port before the server takes calls."""

    def stop(self, grace: float | None = None) -> None:
        """Stop the gRPC server, letting calls in flight finish for ``grace`` seconds."""
        self._server.stop(grace=2.0 if grace is None else grace).wait()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return bool(self._server.wait_for_termination(timeout))

    def __enter__(self) -> Self:
        if not self.port:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop(grace=0.0)


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


# ------------------------------------------------------------------ client ----


def open_channel(target: str, *, tls: bool = False, root_certificates: bytes | None = None,
                 options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel to ``target``: TLS when asked for (implied by ``root_certificates``)."""
    if tls or root_certificates is not None:
        creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        return grpc.secure_channel(target, creds, options=list(options))
    return grpc.insecure_channel(target, options=list(options))


class ServiceClient:
    """A channel to one scalefed service with its token, health stub and retry rule.

    ``to_error`` turns a failed call into the scalefed exception for it; only calls
    the subclass marks idempotent are retried, and only on UNAVAILABLE.
    """

    def __init__(self, target: str, *, token: str | None = None, tls: bool = False,
                 root_certificates: bytes | None = None, call_timeout: float = 10.0,
                 retries: int = 3, retry_backoff: float = 0.2,
                 options: Sequence[tuple[str, Any]] = ()) -> None:
        self._channel = open_channel(target, tls=tls, root_certificates=root_certificates,
                                     options=options)
        self.target = target
        self._metadata = bearer_metadata(token)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self.call_timeout = call_timeout
        self.retries = retries
        self.retry_backoff = retry_backoff

    def _error(self, exc: grpc.RpcError) -> Exception:
        raise NotImplementedError

    def _retrying(self, call: Callable[[], T], *, retry: bool = True) -> T:
        """Run ``call``; when ``retry``, retry UNAVAILABLE with exponential backoff."""
        for attempt in range(self.retries + 1):
            try:
                return call()
            except grpc.RpcError as exc:
                if not retry or exc.code() != grpc.StatusCode.UNAVAILABLE \
                        or attempt == self.retries:
                    raise self._error(exc) from None
                log.debug("%s unavailable (attempt %d): %s", self.target, attempt + 1, exc.details())
                time.sleep(self.retry_backoff * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def health(self, *, service: str = "", timeout: float | None = None) -> str:
        """The grpc.health.v1 status name: SERVING, NOT_SERVING, ..."""
        reply = self._retrying(lambda: self._health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout or self.call_timeout))
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
