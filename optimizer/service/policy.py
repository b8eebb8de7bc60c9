"""The operator's trust boundary for the optimizer service.

Whoever starts ``scalefed serve`` decides what a study may use; a StartStudy or
ResumeStudy client only picks among it:

* the trainer endpoints trials (and the trainer token) go to, each with its TLS settings;
* the trial functions ``--backend inprocess`` may import and call;
* the storage: SQLite files under one root directory, or exact URLs (e.g. PostgreSQL);
* the directories ``study_file`` may be read from.

Every refusal is a ConfigError naming the study field and what this server accepts,
raised before anything is imported, dialled, created or registered.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from optimizer.study.backends import SyntheticBackend, TrialBackend, make_backends
from optimizer.study.endpoints import TrainerEndpoint
from optimizer.study.limits import MAX_TEXT_BYTES
from optimizer.study.storageurl import SQLITE_PREFIX, clip, redact, sqlite_path
from optimizer.study.studyfile import STORAGE_SCHEMES, StudyConfig, parse_study_text
from trainer.contract import DEFAULT_TRIAL_FN
from trainer.errors import ConfigError
from trainer.helptext import meta

MAX_PATH_LEN = 4096


def _real(path: Path | str) -> Path:
    """Absolute, symlinks resolved (relative to the server's working directory)."""
    return Path(os.path.realpath(Path.cwd() / path))


@dataclass(frozen=True, kw_only=True)
class OperatorPolicy:
    """What a client's study may use on this server (set at ``scalefed serve`` start)."""

    endpoints: tuple[TrainerEndpoint, ...] = field(default=(), metadata=meta(
        "trainer workers studies may send trials and the trainer token to (--backend grpc)"))
    trial_functions: tuple[str, ...] = field(default=(DEFAULT_TRIAL_FN,), metadata=meta(
        "module:function trial functions studies may run (--backend inprocess)"))
    storage_root: Path = field(default=Path("runs"), metadata=meta(
        "directory SQLite storages must lie under (studies without storage: ROOT/NAME.db)"))
    storage_urls: tuple[str, ...] = field(default=(), metadata=meta(
        "further storage URLs allowed as written (e.g. postgresql://...); the first is the "
        "default for studies without storage"))
    study_dirs: tuple[Path, ...] = field(default=(Path("studies"),), metadata=meta(
        "directories StartStudy/ResumeStudy may read study_file from"))

    def __post_init__(self) -> None:
        # Resolved once, so a symlink or `..` later cannot move what was checked.
        object.__setattr__(self, "storage_root", _real(self.storage_root))
        object.__setattr__(self, "study_dirs", tuple(_real(d) for d in self.study_dirs))
        addresses = [e.address for e in self.endpoints]
        for address in addresses:
            if addresses.count(address) > 1:
                raise ConfigError("--trainer-endpoint", f"{address} is listed twice",
                                  accepted="each endpoint once")
        for ref in self.trial_functions:
            module, sep, attr = ref.partition(":")
            if not (module and sep and attr):
                raise ConfigError("--allow-trial-fn", f"{ref!r} is not module:function",
                                  accepted=f"module:function, e.g. {DEFAULT_TRIAL_FN}")
        for url in self.storage_urls:
            if not url.startswith(STORAGE_SCHEMES):
                raise ConfigError("--storage", f"unsupported URL {redact(url)!r}",
                                  accepted="sqlite:///PATH or postgresql://USER@HOST/DB")

    # ------------------------------------------------------------ admission ----

    def admit(self, cfg: StudyConfig, *, backend: str) -> StudyConfig:
        """``cfg`` with its storage made canonical, if everything it uses is allowed for
        ``backend``; otherwise a ConfigError naming the study field."""
        cfg = self.admit_storage(cfg)
        if backend == "grpc":
            self.endpoints_for(cfg)
        elif backend == "inprocess":
            self.function_for(cfg)
        return cfg

    def admit_storage(self, cfg: StudyConfig, *, field: str = "storage") -> StudyConfig:
        """``cfg`` with its storage URL checked and made canonical (see ``storage_url``)."""
        return dataclasses.replace(cfg, storage=self.storage_url(cfg.storage, cfg.name,
                                                                 field=field))

    def storage_url(self, url: str, name: str, *, field: str = "storage") -> str:
        """The canonical allowed URL for a study's ``url`` ("" picks this server's default).

        A SQLite path must resolve, symlinks and ``..`` included, to a file under the
        storage root; it becomes ``sqlite:////absolute/path`` so one file has one name.
        """
        if not url:
            return self.storage_urls[0] if self.storage_urls else \
                self._sqlite_url(self.storage_root / f"{name}.db", url, field)
        if url in self.storage_urls:
            return url
        if not url.startswith(SQLITE_PREFIX):
            raise ConfigError(field, f"{clip(redact(url))!r} is not a storage this server allows",
                              accepted=self.storage_accepted)
        path = sqlite_path(url)
        if path is None or "?" in url or "#" in url or len(url) > MAX_PATH_LEN:
            raise ConfigError(field, f"{clip(url)!r} is not a SQLite file URL this server allows",
                              accepted=self.storage_accepted)
        return self._sqlite_url(_real(path), url, field)

    def _sqlite_url(self, path: Path, given: str, field: str) -> str:
        real = _real(path)
        canonical = f"{SQLITE_PREFIX}{real}"
        if real == self.storage_root or not real.is_relative_to(self.storage_root) \
                or sqlite_path(canonical) != real:
            raise ConfigError(field, f"{clip(given or canonical)!r} is outside this server's "
                              "storage root", accepted=self.storage_accepted)
        return canonical

    @property
    def storage_accepted(self) -> str:
        """The storages this server allows, for error messages (passwords hidden)."""
        urls = "".join(f", or {redact(u)}" for u in self.storage_urls)
        return f"{SQLITE_PREFIX}{self.storage_root}/NAME.db (under the storage root){urls}"

    def endpoints_for(self, cfg: StudyConfig) -> tuple[TrainerEndpoint, ...]:
        """The operator's endpoints the study names (all of them when it names none)."""
        allowed = {e.address: e for e in self.endpoints}
        if not allowed:
            raise ConfigError("trainer.endpoints", "this server allows no trainer endpoints",
                              accepted="none; the operator adds them with "
                                       "`scalefed serve --trainer-endpoint HOST:PORT`")
        named = cfg.trainer.endpoints
        for address in named:
            if address not in allowed:
                raise ConfigError("trainer.endpoints", f"{clip(repr(address))} is not a trainer "
                                  "endpoint this server allows", accepted=", ".join(allowed))
        return tuple(allowed[a] for a in named) if named else self.endpoints

    def function_for(self, cfg: StudyConfig) -> str:
        """The allowed trial function the study names (the operator's first when none).

        Only compared as text: nothing is imported unless it is allowed.
        """
        if not self.trial_functions:
            raise ConfigError("trainer.function", "this server runs no in-process trial "
                              "functions", accepted="none; the operator adds them with "
                                                    "`scalefed serve --allow-trial-fn MODULE:FN`")
        ref = cfg.trainer.function or self.trial_functions[0]
        if ref not in self.trial_functions:
            raise ConfigError("trainer.function", f"{clip(repr(ref))} is not a trial function "
                              "this server allows", accepted=", ".join(self.trial_functions))
        return ref

    def backends(self, cfg: StudyConfig, kind: str, *,
                 synthetic: SyntheticBackend | None = None) -> list[TrialBackend]:
        """The study's trial backends, built from the operator's endpoints and functions only."""
        workers = cfg.trainer.workers
        if kind == "grpc":
            return make_backends(kind, endpoints=self.endpoints_for(cfg), workers=workers)
        if kind == "inprocess":
            return make_backends(kind, endpoints=(), workers=workers,
                                 function=self.function_for(cfg))
        slots = max(workers, len(cfg.trainer.endpoints))  # as many parallel trials as named
        return make_backends(kind, endpoints=(), workers=slots, synthetic=synthetic)

    # ---------------------------------------------------------- study files ----

    def read_study_file(self, given: str) -> StudyConfig:
        """The study in ``given``, a .toml file under one of the study directories.

        Anything else gets the same answer whether or not it exists, and is never opened:
        no byte of a file outside the study directories reaches the client.
        """
        accepted = self.study_file_accepted
        if not self.study_dirs:
            raise ConfigError("study_file", "this server reads no study files", accepted=accepted)
        if len(given) > MAX_PATH_LEN or "\0" in given:
            raise ConfigError("study_file", "is not a usable path", accepted=accepted)
        real = _real(given)
        if not (any(real.is_relative_to(d) for d in self.study_dirs) and real.suffix == ".toml"
                and real.is_file()):
            raise ConfigError("study_file", f"no such file {clip(given)!r} under the study "
                              "directories", accepted=accepted)
        try:
            # O_NOFOLLOW: a symlink swapped in after the check is not followed.
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as f:
                data = f.read(MAX_TEXT_BYTES + 1)
        except OSError as exc:
            raise ConfigError("study_file", f"cannot read {clip(given)!r}: {exc.strerror}",
                              accepted=accepted) from None
        return parse_study_text(data, source=str(real), field="study_file")

    @property
    def study_file_accepted(self) -> str:
        if not self.study_dirs:
            return "study_toml (the file's text); this server reads no study files"
        return "a .toml file under " + ", ".join(str(d) for d in self.study_dirs)

    # -------------------------------------------------------------- start-up ----

    def check(self) -> None:
        """Read every endpoint's CA and token file now: a bad path fails at start-up."""
        for endpoint in self.endpoints:
            endpoint.check()

    def describe(self) -> list[str]:
        """One line per allowance, for the start-up log (never a token or password)."""
        lines = [f"trainer endpoint {e.describe()}" for e in self.endpoints]
        lines += [f"trial function {f}" for f in self.trial_functions]
        lines.append(f"storage root {self.storage_root}")
        lines += [f"storage {redact(u)}" for u in self.storage_urls]
        lines += [f"study directory {d}" for d in self.study_dirs]
        return lines


def policy_with(base: OperatorPolicy, *, endpoints: Sequence[TrainerEndpoint] = (),
                trial_functions: Sequence[str] = (), storage_root: Path | None = None,
                storage_urls: Sequence[str] = (), study_dirs: Sequence[Path] = ()) -> OperatorPolicy:
    """``base`` with what flags add: more endpoints and URLs; functions, root and study
    directories given on the command line replace the base's."""
    return dataclasses.replace(
        base, endpoints=base.endpoints + tuple(endpoints),
        trial_functions=tuple(trial_functions) or base.trial_functions,
        storage_root=storage_root or base.storage_root,
        storage_urls=base.storage_urls + tuple(storage_urls),
        study_dirs=tuple(study_dirs) or base.study_dirs)
