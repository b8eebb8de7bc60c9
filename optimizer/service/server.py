"""The optimizer's gRPC server: OptimizerService around a StudyManager.

    server = create_server(OptimizerServerConfig(port=0, backend="synthetic"))
    port = server.start()
    ...
    server.stop()          # NOT_SERVING, halt running studies (trials re-queued), stop

Built on trainer.service.rpc's shared pieces: the same health checking, reflection,
bearer-token check (health stays open), TLS and SIGTERM handling as a trainer worker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from optimizer.service.api import optimizer_pb2, optimizer_pb2_grpc
from optimizer.service.policy import OperatorPolicy
from optimizer.service.servicer import OptimizerServicer
from optimizer.study.backends import BACKEND_KINDS, SyntheticBackend
from optimizer.study.manager import BackendFactory, StudyManager
from optimizer.study.studyfile import StudyConfig
from trainer.errors import ConfigError
from trainer.helptext import meta
from trainer.service.rpc import ListenConfig, ServiceServer, run_until_signal

log = logging.getLogger(__name__)

SERVICE_NAME: str = optimizer_pb2.DESCRIPTOR.services_by_name["OptimizerService"].full_name



@dataclass(frozen=True, kw_only=True)
class OptimizerServerConfig(ListenConfig):
    """How the optimizer service listens and where its studies' trials run."""

    backend: str = field(default="grpc", metadata=meta("where trials run: " + ", ".join(BACKEND_KINDS)))
    synthetic_delay_s: float = field(default=0.0,
                                     metadata=meta("synthetic backend: seconds per simulated round"))
    threads: int = field(default=8, metadata=meta("RPC threads (calls are short)"))
    policy: OperatorPolicy = field(default_factory=OperatorPolicy, metadata=meta(
        "what studies may use: trainer endpoints, trial functions, storage, study files"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backend not in BACKEND_KINDS:
            raise ConfigError("backend", f"unknown backend {self.backend!r}",
                              accepted=", ".join(BACKEND_KINDS))
        if self.synthetic_delay_s < 0:
            raise ConfigError("synthetic_delay_s", f"must be >= 0, got {self.synthetic_delay_s}",
                              accepted=">= 0")
        if self.threads < 2:
            raise ConfigError("threads", f"must be >= 2, got {self.threads}", accepted=">= 2")


def default_backend_factory(config: OptimizerServerConfig) -> BackendFactory:
    """Backends per study for the configured kind, from the operator's policy only (one
    synthetic trainer shared by all)."""
    synthetic = SyntheticBackend(delay_s=config.synthetic_delay_s) \
        if config.backend == "synthetic" else None
    return lambda cfg: config.policy.backends(cfg, config.backend, synthetic=synthetic)


class OptimizerServer(ServiceServer):
    """The optimizer service: gRPC server, servicer, health and reflection."""

    def __init__(self, *, config: OptimizerServerConfig, manager: StudyManager) -> None:
        super().__init__(config=config, service_name=SERVICE_NAME, threads=config.threads,
                         thread_prefix="optimizer-rpc")
        self.config: OptimizerServerConfig = config
        self.manager = manager
        self.servicer = OptimizerServicer(manager=manager, policy=config.policy,
                                          backend=config.backend)
        optimizer_pb2_grpc.add_OptimizerServiceServicer_to_server(self.servicer, self._server)
        self._stopped = False

    def start(self) -> int:
        """Bind, start serving and return the bound port."""
        port = super().start()
        log.info("optimizer service listening on %s (backend %s, %s)", self.address,
                 self.config.backend, self.config.security)
        for line in self.config.policy.describe():
            log.info("allowed: %s", line)
        if self.config.backend == "grpc" and not self.config.policy.endpoints:
            log.warning("no --trainer-endpoint: studies started here cannot run trials")
        for endpoint in self.config.policy.endpoints:
            if not endpoint.tls and endpoint.token() and not _loopback(endpoint.address):
                log.warning("the trainer token goes to %s in plaintext: give it ,ca=PEM or ,tls",
                            endpoint.address)
        return port

    def stop(self, grace: float | None = 5.0) -> None:
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
        super().stop(grace=grace)
        log.info("optimizer service stopped")


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


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
        server.start()
        print(server.startup_line("optimizer", detail=f"backend {config.backend}"), flush=True)

    run_until_signal(start=start, stop=server.stop)
    return 0
