"""Fixtures for optimizer tests: small study configs, invariant checks, a throwaway PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import FrozenTrial, TrialState

from optimizer.study.studyfile import StudyConfig, parse_study

# The quickstart's searched space, shared by every test study (dict and TOML alike).
SPACE: dict[str, dict[str, Any]] = {
    "scaling_factor": {"low": 0.25, "high": 4.0, "log": True},
    "participation": {"low": 0.1, "high": 1.0},
}


def toml_value(value: Any) -> str:
    """``value`` as a TOML literal (strings, numbers, booleans, arrays, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # floats keep their point ("1.0"): some tests match the text
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def study_toml(*, name: str, n_trials: int, storage: str = "", seed: int | None = None,
               distributions: Sequence[Mapping[str, Any]] = ({"kind": "iid"},),
               top: str = "", profile: Mapping[str, Any] | None = None,
               sections: Mapping[str, Mapping[str, Any] | str] | None = None) -> str:
    """A study file's text: the header, the ``[space.*]`` blocks of ``SPACE``, ``[profile]``
    (``model = "tiny-random"`` unless ``profile`` says otherwise), then ``sections`` in order.

    ``top`` is raw top-level TOML (keys only: it comes before the first table); a section's
    value is a mapping of keys or its raw body text, for tests that write odd lines.
    """
    lines = [f"name = {toml_value(name)}"]
    lines += [f"seed = {seed}"] if seed is not None else []
    lines.append(f"n_trials = {n_trials}")
    lines += [f"storage = {toml_value(storage)}"] if storage else []
    lines.append(f"distributions = {toml_value(list(distributions))}")
    lines += [top] if top else []
    tables: dict[str, Mapping[str, Any] | str] = {
        **{f"space.{axis}": spec for axis, spec in SPACE.items()},
        "profile": {"model": "tiny-random", **(profile or {})}, **(sections or {})}
    for table, body in tables.items():
        lines.append(f"[{table}]")
        if isinstance(body, str):
            lines += [body] if body else []
        else:
            lines += [f"{k} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def small_study(*, storage: str, n_trials: int = 8, seed: int = 0, startup: int = 4,
                stop: bool = False, problems: str = "40", trainer: dict[str, Any] | None = None,
                distributions: list[dict[str, Any]] | None = None) -> StudyConfig:
    return parse_study({
        "name": "t", "seed": seed, "n_trials": n_trials, "storage": storage,
        "distributions": distributions or [{"kind": "iid"}],
        "space": {axis: dict(spec) for axis, spec in SPACE.items()},
        "profile": {"model": "tiny-random", "problems": problems, "samples": 10, "clients": 10},
        "trainer": trainer or {"heartbeat_s": 1.0, "lease_s": 3.0, "max_retries": 3},
        "sampler": {"n_startup_trials": startup},
        "stop": {"enabled": stop},
    })


def assert_no_loss_no_duplicate(trials: Sequence[FrozenTrial], *, n_trials: int) -> None:
    """Every fresh parameter set of the budget has exactly one COMPLETE trial; none RUNNING."""
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states, "zombie RUNNING trial left"
    assert TrialState.WAITING not in states, "queued trial never run"
    ran = [t for t in trials if not ("surplus" in t.user_attrs or "duplicate_of" in t.user_attrs)]
    fresh = [t for t in ran if "retry_of" not in t.user_attrs]
    assert len(fresh) == n_trials, f"{len(fresh)} fresh trials for a budget of {n_trials}"
    complete_per_root: dict[int, int] = {}
    for t in ran:
        root = int(t.user_attrs.get("retry_of", t.number))
        if t.state == TrialState.COMPLETE:
            complete_per_root[root] = complete_per_root.get(root, 0) + 1
    for t in fresh:
        assert complete_per_root.get(t.number) == 1, (
            f"trial {t.number}: {complete_per_root.get(t.number, 0)} completions")
    for t in ran:
        if t.state == TrialState.COMPLETE:
            root = int(t.user_attrs.get("retry_of", t.number))
            same = [u for u in ran if u.state == TrialState.COMPLETE
                    and int(u.user_attrs.get("retry_of", u.number)) == root]
            assert len(same) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / name).exists():
            return str(base / name)
    return None


def _as_pg_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the postgres user when we are root."""
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *cmd]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server in a temp dir; skipped only if its binaries are absent."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found; run .ci/services")
    if os.geteuid() == 0:
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user; run .ci/services")
    root = Path(tempfile.mkdtemp(prefix="scalefed-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        for p in (root, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    subprocess.run(_as_pg_user([initdb, "-D", str(data), "-U", "postgres", "--auth=trust",
                                "-E", "UTF8"]), check=True, capture_output=True, env=env)
    subprocess.run(_as_pg_user([pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                                f"-p {port} -k {sock} -c listen_addresses=127.0.0.1",
                                "start"]), check=True, capture_output=True, env=env)
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_pg_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
                       check=False, capture_output=True, env=env)
        time.sleep(0.2)
        shutil.rmtree(root, ignore_errors=True)
