"""The one mapping between scalefed's domain errors and gRPC status codes.

The server turns a raised exception into a status (:func:`status_for`,
:func:`abort`); the client turns a status back into an exception
(:func:`exception_from_rpc_error`). Keeping both directions in this module is
what keeps them consistent.

A :class:`~trainer.errors.ConfigError` travels as INVALID_ARGUMENT with its
``field`` and ``accepted`` in the trailing metadata (``scalefed-field``,
``scalefed-accepted``), so the client rebuilds the same error, not just its text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import grpc

from trainer.errors import (
    CapacityError,
    ConfigError,
    ModelNotFoundError,
    ScalefedError,
    TrialCancelledError,
)

FIELD_KEY = "scalefed-field"
ACCEPTED_KEY = "scalefed-accepted"
# Details and metadata travel in HTTP/2 headers (8 KiB by default): a longer
# status would come back as RESOURCE_EXHAUSTED instead of itself.
MAX_DETAILS = 2_000
MAX_METADATA_VALUE = 500


class TrainerRpcError(ScalefedError):
    """A call to a trainer failed for a transport or server-side reason.

    ``code`` is the gRPC status code (each subclass has its own default).
    """

    default_code = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code or self.default_code


class AuthenticationError(TrainerRpcError):
    """The worker requires a bearer token and the call had none or a wrong one."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class WorkerUnavailableError(TrainerRpcError):
    """The worker cannot be reached or is draining; nothing was started there."""

    default_code = grpc.StatusCode.UNAVAILABLE


class DuplicateTrialError(TrainerRpcError):
    """A trial with this id is already running on the worker."""

    default_code = grpc.StatusCode.ALREADY_EXISTS


class RemoteInternalError(TrainerRpcError):
    """The trial or the worker failed unexpectedly (a bug or a broken environment)."""

    default_code = grpc.StatusCode.INTERNAL


class TrialDeadlineExceededError(TrialCancelledError):
    """The call's deadline expired; the worker stopped the trial."""


@dataclass(frozen=True, kw_only=True)
class Status:
    """A gRPC status with scalefed's structured trailing metadata."""

    code: grpc.StatusCode
    details: str
    metadata: tuple[tuple[str, str], ...] = ()


# Domain errors (trainer.errors) and their codes; first match wins, subclasses first.
_DOMAIN_TO_CODE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
    (CapacityError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (TrialDeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (TrialCancelledError, grpc.StatusCode.CANCELLED),
)
_CODE_TO_DOMAIN: dict[grpc.StatusCode, type[ScalefedError]] = {
    code: cls for cls, code in _DOMAIN_TO_CODE if issubclass(cls, ScalefedError)
}
_CODE_TO_RPC: dict[grpc.StatusCode, type[TrainerRpcError]] = {
    cls.default_code: cls
    for cls in (AuthenticationError, WorkerUnavailableError, DuplicateTrialError,
                RemoteInternalError)
}


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    cut = f"... [{len(text) - limit} more characters]"
    return text[:max(limit - len(cut), 0)] + cut


def status_for(exc: BaseException) -> Status:
    """The status a server answers for ``exc``; anything unexpected is INTERNAL.

    Details and metadata are clipped so that the status always fits in the headers.
    """
    if isinstance(exc, ConfigError):
        return _invalid_argument(exc)
    status = _status_for(exc)
    return Status(code=status.code, details=clip(status.details, MAX_DETAILS))


def _ascii(text: str) -> str:
    # Plain metadata values must be printable ASCII, or the call fails on the wire.
    return "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode() for c in text)


def _invalid_argument(exc: ConfigError) -> Status:
    # Clip each part, then compose, so the client can split field, message and
    # accepted again (see _config_error).
    field = clip(_ascii(exc.field), 200)
    accepted = clip(_ascii(exc.accepted), MAX_METADATA_VALUE) if exc.accepted else None
    message = clip(exc.message, MAX_DETAILS - len(field) - len(accepted or "") - 20)
    rebuilt = ConfigError(field, message, accepted=accepted)
    meta = [(FIELD_KEY, field)] + ([(ACCEPTED_KEY, accepted)] if accepted else [])
    return Status(code=grpc.StatusCode.INVALID_ARGUMENT, details=str(rebuilt), metadata=tuple(meta))


def _status_for(exc: BaseException) -> Status:
    if isinstance(exc, TrainerRpcError):
        return Status(code=exc.code, details=str(exc) or type(exc).__name__)
    for cls, code in _DOMAIN_TO_CODE:
        if isinstance(exc, cls):
            return Status(code=code, details=str(exc) or cls.__name__)
    return Status(code=grpc.StatusCode.INTERNAL,
                  details=f"internal error: {type(exc).__name__}: {exc}")


def abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    """End the RPC with the status for ``exc`` (raises, like ``context.abort``)."""
    status = status_for(exc)
    if status.metadata:
        context.set_trailing_metadata(status.metadata)
    context.abort(status.code, status.details)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def _metadata_dict(metadata: Sequence[tuple[str, str | bytes]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in metadata or ():
        out[key] = value.decode() if isinstance(value, bytes) else value
    return out


def _config_error(details: str, trailing: dict[str, str]) -> ConfigError:
    field = trailing.get(FIELD_KEY) or details.split(":", 1)[0].strip() or "request"
    accepted = trailing.get(ACCEPTED_KEY)
    # Strip the "field: " prefix and " (accepted: ...)" suffix ConfigError adds itself.
    message = details.removeprefix(f"{field}: ")
    if accepted:
        message = message.removesuffix(f" (accepted: {accepted})")
    return ConfigError(field, message, accepted=accepted)


def exception_from_rpc_error(error: grpc.RpcError) -> ScalefedError:
    """The domain exception a client raises for a failed call."""
    code: grpc.StatusCode = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details: str = (error.details() if hasattr(error, "details") else None) or str(code.name)
    trailing = _metadata_dict(error.trailing_metadata() if hasattr(error, "trailing_metadata")
                              else None)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return _config_error(details, trailing)
    if code in _CODE_TO_DOMAIN:
        return _CODE_TO_DOMAIN[code](details)
    return _CODE_TO_RPC.get(code, TrainerRpcError)(details, code=code)
