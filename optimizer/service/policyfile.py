"""The server config file of ``scalefed serve --config FILE``: the operator's policy in TOML.

    storage_root = "runs"                       # SQLite storages lie under it
    storage = ["postgresql://optuna@db/studies"]  # further URLs, allowed as written
    study_dirs = ["studies"]                    # where study_file may be read
    allow_trial_fn = ["trainer.trial:run_trial"]  # --backend inprocess

    [[trainer_endpoint]]                        # --backend grpc; repeat per worker
    address = "gpu1:50051"
    ca = "certs/ca.pem"                         # PEM root CA; implies TLS
    token_file = "secrets/gpu1.token"           # default $SCALEFED_TRAINER_TOKEN

Relative paths are relative to the file's directory. Keys left out keep the defaults
of ``OperatorPolicy``; command-line flags add to (endpoints, storage) or replace
(functions, root, study directories) what the file says.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from optimizer.service.policy import OperatorPolicy
from optimizer.study.endpoints import TrainerEndpoint
from trainer.errors import ConfigError

_KEYS = {"storage_root", "storage", "study_dirs", "allow_trial_fn", "trainer_endpoint"}
_ENDPOINT_KEYS = {"address", "tls", "ca", "token_file"}


def _strings(data: dict[str, Any], key: str, where: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key}", "must be a list of strings", accepted='["..."]')
    return value


def _endpoint(table: Any, base: Path, where: str) -> TrainerEndpoint:
    if not isinstance(table, dict) or set(table) - _ENDPOINT_KEYS or "address" not in table:
        raise ConfigError(f"{where}: trainer_endpoint", "must be a table with an address",
                          accepted=", ".join(sorted(_ENDPOINT_KEYS)))
    if not isinstance(table.get("tls", False), bool) or not all(
            isinstance(table.get(k, ""), str) for k in ("address", "ca", "token_file")):
        raise ConfigError(f"{where}: trainer_endpoint", "address, ca and token_file are "
                          "strings, tls true or false", accepted=", ".join(sorted(_ENDPOINT_KEYS)))
    return TrainerEndpoint(address=table["address"], tls=table.get("tls", False),
                           root_ca=base / table["ca"] if "ca" in table else None,
                           token_file=base / table["token_file"] if "token_file" in table
                           else None)


def load_policy(path: Path) -> OperatorPolicy:
    """The policy a server config file describes (ConfigError naming the file and key)."""
    where = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise ConfigError("--config", f"{path}: invalid TOML: {exc}", accepted="TOML 1.0") from None
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]}", "unknown key", accepted=", ".join(sorted(_KEYS)))
    base = path.parent
    kwargs: dict[str, Any] = {}
    if "storage_root" in data:
        if not isinstance(data["storage_root"], str):
            raise ConfigError(f"{where}: storage_root", "must be a string", accepted="a directory")
        kwargs["storage_root"] = base / data["storage_root"]
    if "storage" in data:
        kwargs["storage_urls"] = tuple(_strings(data, "storage", where))
    if "study_dirs" in data:
        kwargs["study_dirs"] = tuple(base / d for d in _strings(data, "study_dirs", where))
    if "allow_trial_fn" in data:
        kwargs["trial_functions"] = tuple(_strings(data, "allow_trial_fn", where))
    tables = data.get("trainer_endpoint", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{where}: trainer_endpoint", "must be an array of tables",
                          accepted="[[trainer_endpoint]] tables")
    kwargs["endpoints"] = tuple(_endpoint(t, base, where) for t in tables)
    return OperatorPolicy(**kwargs)
