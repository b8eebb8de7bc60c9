"""Domain errors. Transport layers (gRPC, CLI) map these to status codes / exit codes in one place."""

from __future__ import annotations


class ScalefedError(Exception):
    """Base class of every error scalefed raises on purpose."""


class ConfigError(ScalefedError, ValueError):
    """A configuration value is missing or out of range.

    ``field`` names the offending field (dotted for nested configs) and
    ``accepted`` says what would have been accepted.
    """

    def __init__(self, field: str, message: str, *, accepted: str | None = None) -> None:
        self.field = field
        self.message = message
        self.accepted = accepted
        text = f"{field}: {message}"
        if accepted:
            text += f" (accepted: {accepted})"
        super().__init__(text)


class ModelNotFoundError(ScalefedError, LookupError):
    """The model name is neither a preset, a local directory, nor reachable on a hub."""


class TrialCancelledError(ScalefedError):
    """A trial was stopped by a cancel request or an expired deadline."""


class CapacityError(ScalefedError):
    """A worker is already running as many trials as it allows."""
