"""The operator's policy as the operator writes it: endpoint specs, the server config
file, the `scalefed serve` flags (a real server process), and `study run`'s endpoints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from optimizer.service.api import optimizer_pb2 as pb
from optimizer.service.policy import OperatorPolicy, policy_with
from optimizer.service.policyfile import load_policy
from optimizer.study.backends import GrpcBackend
from optimizer.study.endpoints import TrainerEndpoint
from optimizer.study.manager import backends_for
from tests.optimizer.conftest import small_study
from tests.optimizer.service.hostile import assert_invalid, raw_error, study_toml
from trainer.errors import ConfigError
from trainer.service.status import ACCEPTED_KEY

pytestmark = pytest.mark.timeout(60)


def test_endpoint_specs(tmp_path: Path) -> None:
    plain = TrainerEndpoint.parse("gpu1:50051")
    assert (plain.address, plain.tls, plain.root_ca, plain.token_file) == \
        ("gpu1:50051", False, None, None)
    full = TrainerEndpoint.parse(f"[::1]:7,ca={tmp_path}/ca.pem,token-file={tmp_path}/t")
    assert full.tls and full.root_ca == tmp_path / "ca.pem" and full.token_file == tmp_path / "t"
    assert TrainerEndpoint.parse("h:1,tls").tls
    for bad in ("h:1,cert=x", "h:1,ca=", "", "h 1:2"):
        with pytest.raises(ConfigError) as err:
            TrainerEndpoint.parse(bad)
        assert err.value.field == "--trainer-endpoint" and "HOST:PORT" in str(err.value.accepted)
    with pytest.raises(ConfigError, match="cannot read"):
        full.check()  # the CA file does not exist: refused at start-up
    (tmp_path / "t").write_text("secret\n")
    assert TrainerEndpoint(address="h:1", token_file=tmp_path / "t").token() == "secret"
    assert "secret" not in TrainerEndpoint(address="h:1", token_file=tmp_path / "t").describe()


def test_config_file_and_flags(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text('''
storage_root = "db"
storage = ["postgresql://optuna@db/studies"]
study_dirs = ["studies"]
allow_trial_fn = ["tests.trainer.fakes:fake_trial"]
[[trainer_endpoint]]
address = "gpu1:50051"
ca = "ca.pem"
token_file = "gpu1.token"
''')
    policy = load_policy(tmp_path / "policy.toml")
    assert policy.storage_root == tmp_path.resolve() / "db"
    assert policy.study_dirs == (tmp_path.resolve() / "studies",)
    assert policy.endpoints == (TrainerEndpoint(address="gpu1:50051", root_ca=tmp_path / "ca.pem",
                                                token_file=tmp_path / "gpu1.token"),)
    assert policy.endpoints[0].tls
    merged = policy_with(policy, endpoints=[TrainerEndpoint(address="gpu2:1")],
                         storage_urls=["postgresql://other@db/x"])
    assert [e.address for e in merged.endpoints] == ["gpu1:50051", "gpu2:1"]
    assert merged.storage_urls == ("postgresql://optuna@db/studies", "postgresql://other@db/x")
    assert merged.trial_functions == ("tests.trainer.fakes:fake_trial",)
    (tmp_path / "bad.toml").write_text('allow_everything = true\n')
    with pytest.raises(ConfigError, match="unknown key"):
        load_policy(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="listed twice"):
        policy_with(policy, endpoints=[TrainerEndpoint(address="gpu1:50051")])
    assert OperatorPolicy().trial_functions == ("trainer.trial:run_trial",)


def test_study_run_dials_the_operators_tls_endpoint(tmp_path: Path) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/x.db")
    (tmp_path / "ca.pem").write_bytes(b"not a real certificate")
    tls = TrainerEndpoint.parse(f"127.0.0.1:9,ca={tmp_path}/ca.pem")
    backends = backends_for(cfg, "grpc", endpoints=[tls])
    assert [b.name for b in backends] == ["127.0.0.1:9"]
    assert all(isinstance(b, GrpcBackend) for b in backends)
    for b in backends:
        b.close()  # type: ignore[attr-defined]


def test_scalefed_serve_enforces_its_flags(tmp_path: Path) -> None:
    studies, root = tmp_path / "studies", tmp_path / "root"
    studies.mkdir()
    (tmp_path / "elsewhere.toml").write_text(study_toml("x"))
    (tmp_path / "policy.toml").write_text('[[trainer_endpoint]]\naddress = "127.0.0.1:1"\n')
    command = [sys.executable, "-m", "optimizer.cli", "serve", "--port", "0",
               "--config", str(tmp_path / "policy.toml"), "--trainer-endpoint", "127.0.0.1:2",
               "--storage-root", str(root), "--study-dir", str(studies)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"listening on (\S+) ", line)
        assert match, line + (proc.stderr.read() if proc.stderr else "")
        address = match.group(1)
        toml = study_toml("x", trainer='endpoints = ["127.0.0.1:3"]')
        trailing = assert_invalid(raw_error(address, "StartStudy",
                                            pb.StartStudyRequest(study_toml=toml)),
                                  "trainer.endpoints")
        assert trailing[ACCEPTED_KEY] == "127.0.0.1:1, 127.0.0.1:2"
        assert_invalid(raw_error(address, "StartStudy", pb.StartStudyRequest(
            study_file=str(tmp_path / "elsewhere.toml"))), "study_file")
        assert_invalid(raw_error(address, "StartStudy", pb.StartStudyRequest(
            study_toml=study_toml("x", storage=f"sqlite:///{tmp_path}/x.db"))), "storage")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bad = subprocess.run([*command[:6], "--trainer-endpoint", "h:1,ca=/nonexistent.pem"],
                         check=False, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "/nonexistent.pem" in bad.stderr
