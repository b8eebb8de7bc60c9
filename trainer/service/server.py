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

import logging
import socket
import threading
from dataclasses import dataclass, field

from trainer.contract import TrialFunction
from trainer.devices import check_device
from trainer.errors import ConfigError
from trainer.helptext import meta
from trainer.service.api import trainer_pb2, trainer_pb2_grpc
from trainer.service.rpc import ListenConfig, ServiceServer, run_until_signal
from trainer.service.servicer import TrainerServicer
from trainer.service.worker import TrialRunner, WorkerPolicy

log = logging.getLogger(__name__)

SERVICE_NAME: str = trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name

@dataclass(frozen=True, kw_only=True)
class ServerConfig(ListenConfig):
    """How a trainer worker listens and what it accepts."""

    capacity: int = field(default=1, metadata=meta("trials run at once; more are rejected"))
    devices: tuple[str, ...] = field(default=(), metadata=meta(
        "devices trials run on, one trial slot each (cpu, cuda:N); the capacity is their "
        "number. Empty: each trial runs where its own device setting says"))
    policy: WorkerPolicy = field(default_factory=WorkerPolicy,
                                 metadata=meta("scaling-factor range, allowed models, defaults"))
    budget_profile: str = field(default="default", metadata=meta("budget profile name, reported"))
    worker_name: str | None = field(default=None, metadata=meta("name in events; host:port if unset"))
    grace_seconds: float = field(default=30.0,
                                 metadata=meta("on shutdown, how long running trials may finish"))
    spare_threads: int = field(default=8,
                               metadata=meta("RPC threads beyond capacity (info, cancel, rejects)"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.capacity < 1:
            raise ConfigError("capacity", f"must be >= 1, got {self.capacity}", accepted=">= 1")
        for device in self.devices:
            if check_device(device) == "auto":
                raise ConfigError("devices", "auto is not a device", accepted="cpu, cuda, cuda:N")
        if self.devices and self.capacity not in (1, len(self.devices)):
            raise ConfigError("capacity", f"{self.capacity} differs from the {len(self.devices)} "
                              "devices", accepted="one trial per device: leave capacity unset")
        if self.spare_threads < 2:
            raise ConfigError("spare_threads", f"must be >= 2, got {self.spare_threads}",
                              accepted=">= 2")


class TrainerServer(ServiceServer):
    """A trainer worker: gRPC server, servicer, health and reflection."""

    def __init__(self, *, config: ServerConfig, trial_fn: TrialFunction) -> None:
        threads = max(config.capacity, len(config.devices)) + config.spare_threads
        # Concurrent RPCs are capped at the thread count so an overload is
        # refused at once instead of queueing behind running trials.
        super().__init__(config=config, service_name=SERVICE_NAME, threads=threads,
                         thread_prefix="trainer-rpc", maximum_concurrent_rpcs=threads)
        self.config: ServerConfig = config
        self.runner = TrialRunner(trial_fn=trial_fn, capacity=config.capacity,
                                  devices=config.devices)
        self.servicer = TrainerServicer(runner=self.runner, policy=config.policy, worker="",
                                        budget_profile=config.budget_profile)
        trainer_pb2_grpc.add_TrainerServiceServicer_to_server(self.servicer, self._server)
        self._stop_lock = threading.Lock()
        self._stopped = False

    def _bound(self, port: int) -> None:
        self.servicer.worker = self.config.worker_name or f"{socket.gethostname()}:{port}"

    def start(self) -> int:
        """Bind, start serving and return the bound port."""
        port = super().start()
        log.info("trainer worker %s listening on %s:%d (capacity %d, %s)", self.servicer.worker,
                 self.config.host, port, self.runner.capacity, self.config.security)
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
        super().stop(grace=2.0)
        log.info("trainer worker stopped")


def create_server(config: ServerConfig, *, trial_fn: TrialFunction) -> TrainerServer:
    """A trainer worker, not yet started (call ``start()`` or use it as a context manager)."""
    return TrainerServer(config=config, trial_fn=trial_fn)


def serve(config: ServerConfig, *, trial_fn: TrialFunction) -> int:
    """Run a worker until SIGTERM/SIGINT, then drain gracefully. A second signal
    cancels running trials at once. Returns an exit code."""
    server = create_server(config, trial_fn=trial_fn)

    def start() -> None:
        server.start()
        print(server.startup_line("trainer"), flush=True)

    run_until_signal(start=start, stop=server.stop, on_repeat=lambda name: server.runner.cancel_all(
        f"the worker got {name} again"))
    return 0
