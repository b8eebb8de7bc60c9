"""The optimizer's gRPC server: OptimizerService around a StudyManager.

    server = create_server(OptimizerServerConfig(port=0, backend="synthetic"))
    port = server.start()
    ...
    server.stop()          # NOT_SERVING, halt running studies (trials re-queued), stop

Built from trainer.server's shared pieces: the same health checking, reflection,
bearer-token check (health stays open), TLS and SIGTERM handling as a trainer worker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import grpc

from optimizer.backends import BACKEND_KINDS, SyntheticBackend
from optimizer.manager import BackendFactory, StudyManager, backends_for
from optimizer.servicer import OptimizerServicer
from optimizer.studyfile import StudyConfig
from trainer.api.scalefed.v1 import optimizer_pb2, optimizer_pb2_grpc
from trainer.errors import ConfigError
from trainer.server import (
    add_health_and_reflection,
    auth_interceptors,
    bind_port,
    check_listen_options,
    dial_address,
    run_until_signal,
    set_serving,
)

log = logging.getLogger(__name__)

SERVICE_NAME: str = optimizer_pb2.DESCRIPTOR.services_by_name["OptimizerService"].full_name


def _meta(help_text: str) -> dict[str, str]:
    return {"help": help_text}


@dataclass(frozen=True, kw_only=True)
class OptimizerServerConfig:
    """How the optimizer service listens and where its studies' trials run."""

    host: str = field(default="127.0.0.1", metadata=_meta("interface to bind; 0.0.0.0 to widen"))
    port: int = field(default=0, metadata=_meta("TCP port; 0 picks a free one"))
    token: str | None = field(default=None, metadata=_meta("bearer token required from clients"))
    tls_cert: Path | None = field(default=None, metadata=_meta("PEM certificate chain (with tls_key)"))
    tls_key: Path | None = field(default=None, metadata=_meta("PEM private key (with tls_cert)"))
    backend: str = field(default="grpc", metadata=_meta("where trials run: " + ", ".join(BACKEND_KINDS)))
    synthetic_delay_s: float = field(default=0.0,
                                     metadata=_meta("synthetic backend: seconds per simulated round"))
    threads: int = field(default=8, metadata=_meta("RPC threads (calls are short)"))

    def __post_init__(self) -> None:
        check_listen_options(port=self.port, token=self.token, tls_cert=self.tls_cert,
                             tls_key=self.tls_key)
        if self.backend not in BACKEND_KINDS:
            raise ConfigError("backend", f"unknown backend {self.backend!r}",
                              accepted=", ".join(BACKEND_KINDS))
        if self.synthetic_delay_s < 0:
            raise ConfigError("synthetic_delay_s", f"must be >= 0, got {self.synthetic_delay_s}",
                              accepted=">= 0")
        if self.threads < 2:
            raise ConfigError("threads", f"must be >= 2, got {self.threads}", accepted=">= 2")


def default_backend_factory(config: OptimizerServerConfig) -> BackendFactory:
    """Backends per study for the configured kind (one synthetic trainer shared by all)."""
    synthetic = SyntheticBackend(delay_s=config.synthetic_delay_s) \
        if config.backend == "synthetic" else None
    return lambda cfg: backends_for(cfg, config.backend, synthetic=synthetic)


class OptimizerServer:
    """The optimizer service: gRPC server, servicer, health and reflection."""

    def __init__(self, *, config: OptimizerServerConfig, manager: StudyManager) -> None:
        self.config = config
        self.manager = manager
        self.servicer = OptimizerServicer(manager=manager)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="optimizer-rpc"),
            interceptors=auth_interceptors(config.token))
        optimizer_pb2_grpc.add_OptimizerServiceServicer_to_server(self.servicer, self._server)
        self.health = add_health_and_reflection(self._server, (SERVICE_NAME,))
        self.port = 0
        self._stopped = False

    @property
    def address(self) -> str:
        """``host:port`` a client on this machine can dial."""
        return dial_address(self.config.host, self.port)

    def start(self) -> int:
        """Bind, start serving and return the bound port."""
        c = self.config
        self.port = bind_port(self._server, host=c.host, port=c.port, tls_cert=c.tls_cert,
                              tls_key=c.tls_key)
        self._server.start()
        set_serving(self.health, (SERVICE_NAME,))
        log.info("optimizer service listening on %s (backend %s, %s%s)", self.address, c.backend,
                 "TLS" if c.tls_cert else "plaintext", ", token required" if c.token else "")
        return self.port

    def stop(self, grace: float = 5.0) -> None:
        """NOT_SERVING, halt running studies (their trials are re-queued for resume), stop.
        Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.health.enter_graceful_shutdown()
        for st in self.manager.list():
            if st.running:
                log.info("halting study %s", st.name)
                self.manager.stop(st.name, wait=True)
        self._server.stop(grace=grace).wait()
        log.info("optimizer service stopped")

    def __enter__(self) -> Self:
        if not self.port:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop(grace=0.0)


def create_server(config: OptimizerServerConfig, *, manager: StudyManager | None = None,
                  studies: Sequence[StudyConfig] = ()) -> OptimizerServer:
    """An optimizer service, not yet started; ``studies`` are registered (queryable and
    resumable by name) without running."""
    server = OptimizerServer(
        config=config,
        manager=manager or StudyManager(backend_factory=default_backend_factory(config)))
    for cfg in studies:
        server.servicer.register(cfg)
    return server


def serve(config: OptimizerServerConfig, *, studies: Sequence[StudyConfig] = ()) -> int:
    """Serve until SIGTERM/SIGINT, then halt running studies gracefully. Returns an exit code."""
    server = create_server(config, studies=studies)

    def start() -> None:
        port = server.start()
        print(f"scalefed optimizer listening on {server.address} (port {port}, "
              f"backend {config.backend})", flush=True)

    run_until_signal(start=start, stop=server.stop)
    return 0
