"""Trainer endpoints: one worker's address with how to reach it (TLS, root CA, token).

The operator names them (``scalefed serve --trainer-endpoint``, ``study run
--trainer-endpoint``); ``optimizer.study.backends.make_backends`` turns each into a
``GrpcBackend``. The trainer token goes only to endpoints built here.

    TrainerEndpoint.parse("gpu1:50051,ca=certs/ca.pem,token-file=secrets/gpu1")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from trainer.errors import ConfigError
from trainer.helptext import meta
from trainer.service.rpc import TRAINER_TOKEN_ENV

MAX_ADDRESS_LEN = 256
SPEC_ACCEPTED = "HOST:PORT[,tls][,ca=PEM_FILE][,token-file=FILE]"


@dataclass(frozen=True, kw_only=True)
class TrainerEndpoint:
    """One trainer worker the optimizer may send trials, and its trainer token, to."""

    address: str = field(metadata=meta("gRPC target of the worker, host:port"))
    tls: bool = field(default=False, metadata=meta("dial over TLS (implied by root_ca)"))
    root_ca: Path | None = field(default=None, metadata=meta(
        "PEM root certificate(s) that verify the worker; default: the system's roots"))
    token_file: Path | None = field(default=None, metadata=meta(
        f"file holding this worker's bearer token; default ${TRAINER_TOKEN_ENV}"))

    def __post_init__(self) -> None:
        address = self.address
        if not address or len(address) > MAX_ADDRESS_LEN or any(c.isspace() for c in address) \
                or "," in address:
            raise ConfigError("address", f"invalid address {address[:80]!r}",
                              accepted=f"host:port, at most {MAX_ADDRESS_LEN} characters")
        if self.root_ca is not None and not self.tls:
            object.__setattr__(self, "tls", True)

    @classmethod
    def parse(cls, spec: str, *, where: str = "--trainer-endpoint") -> TrainerEndpoint:
        """``HOST:PORT[,tls][,ca=PEM_FILE][,token-file=FILE]`` (the command-line form)."""
        address, *options = spec.split(",")
        kwargs: dict[str, object] = {}
        for option in options:
            key, sep, value = option.partition("=")
            if key == "tls" and not sep:
                kwargs["tls"] = True
            elif key == "ca" and value:
                kwargs["root_ca"] = Path(value)
            elif key == "token-file" and value:
                kwargs["token_file"] = Path(value)
            else:
                raise ConfigError(where, f"unknown option {option[:80]!r}", accepted=SPEC_ACCEPTED)
        try:
            return cls(address=address.strip(), **kwargs)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise ConfigError(where, str(exc), accepted=SPEC_ACCEPTED) from None

    def token(self) -> str | None:
        """The bearer token for this worker: its token file, else $SCALEFED_TRAINER_TOKEN."""
        if self.token_file is None:
            return os.environ.get(TRAINER_TOKEN_ENV) or None
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError("token-file", f"{self.address}: cannot read {self.token_file}: "
                              f"{exc.strerror}", accepted="a readable file") from None
        if not token:
            raise ConfigError("token-file", f"{self.address}: {self.token_file} is empty",
                              accepted="a file holding the token")
        return token

    def root_certificates(self) -> bytes | None:
        """The PEM bytes of ``root_ca`` (None: the system's roots, or plaintext)."""
        if self.root_ca is None:
            return None
        try:
            return self.root_ca.read_bytes()
        except OSError as exc:
            raise ConfigError("ca", f"{self.address}: cannot read {self.root_ca}: {exc.strerror}",
                              accepted="a readable PEM file") from None

    def check(self) -> None:
        """Read the CA and token files now, so a bad path fails at start-up, not mid-study."""
        self.root_certificates()
        self.token()

    def describe(self) -> str:
        """``host:port (TLS, token from FILE)``, for start-up logs; never the token itself."""
        security = "TLS" if self.tls else "plaintext"
        source = f"token from {self.token_file}" if self.token_file else \
            f"token from ${TRAINER_TOKEN_ENV}" if os.environ.get(TRAINER_TOKEN_ENV) else "no token"
        return f"{self.address} ({security}, {source})"
