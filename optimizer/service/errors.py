"""Errors of the optimizer service that have their own gRPC status code.

They subclass ``trainer.service.status.TrainerRpcError`` (an error that carries its code),
so ``trainer.service.status`` - the one mapping - turns them into statuses unchanged, and
``optimizer.service.client`` rebuilds them from the code.
"""

from __future__ import annotations

import grpc

from trainer.service.status import TrainerRpcError


class StudyNotFoundError(TrainerRpcError, LookupError):
    """No study of that name is known to the server (or stored, for a resume)."""

    default_code = grpc.StatusCode.NOT_FOUND


class StudyRunningError(TrainerRpcError):
    """The study is already running on this server."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION
