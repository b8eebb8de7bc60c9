"""Issue 10, items 5, 6 and 7: storage stays under the operator's root, a refused request
changes no server state, and study files are read only from the operator's directories.

Each test is an attack of the issue against a real optimizer server over gRPC.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from optimizer.service.api import optimizer_pb2 as pb
from optimizer.service.client import OptimizerClient
from optimizer.service.errors import StudyNotFoundError
from optimizer.service.policy import OperatorPolicy
from tests.optimizer.service.hostile import assert_invalid, optimizer, raw_error, study_toml

pytestmark = pytest.mark.timeout(60)


def _start_error(address: str, name: str, storage: str, *, override: bool) -> grpc.RpcError:
    """StartStudy with ``storage`` in the study text or as the request's override."""
    if override:
        request = pb.StartStudyRequest(study_toml=study_toml(name),
                                       overrides=pb.StudyOverrides(storage=storage))
    else:
        request = pb.StartStudyRequest(study_toml=study_toml(name, storage=storage))
    return raw_error(address, "StartStudy", request)


def test_item5_storage_stays_under_the_operators_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    (root / "empty.db").touch()
    (root / "notes.db").write_text("private notes\n")
    (root / "link.db").symlink_to(tmp_path / "target.db")
    policy = OperatorPolicy(storage_root=root, storage_urls=("postgresql://op:pw@db/ok",))
    attacks = [
        f"sqlite:///{root}/../escape.db",        # `..` out of the root
        "sqlite:///../escape.db",                # relative to the server's directory
        f"sqlite:///{outside}/new/dir/x.db",     # creates directories outside
        f"sqlite:///{root}/link.db",             # a symlink out of the root
        f"sqlite:///{root}/x.db?mode=rwc",       # URL options
        "postgresql://attacker@evil.example/db",  # a database the operator did not name
    ]
    late = [f"sqlite:///{root}/empty.db", f"sqlite:///{root}/notes.db"]  # not databases
    with optimizer(policy) as srv, OptimizerClient(srv.address) as client:
        for i, url in enumerate(attacks + late):
            for override in (False, True):
                error = _start_error(srv.address, f"s{i}", url, override=override)
                field = "overrides.storage" if override and url in attacks else "storage"
                trailing = assert_invalid(error, field)
                assert ":pw@" not in str(trailing) + (error.details() or "")  # password hidden
                assert "private notes" not in (error.details() or "")
        assert client.list_studies() == []
        # Inside the root, new directories are fine.
        client.start_study(study_toml=study_toml("ok"),
                           storage=f"sqlite:///{root}/sub/ok.db", n_trials=1)
        assert client.wait("ok", timeout=30).distributions[0].complete == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]  # nothing created outside
    assert not (Path.cwd().parent / "escape.db").exists()
    assert (root / "empty.db").stat().st_size == 0
    assert (root / "notes.db").read_text() == "private notes\n"
    assert (root / "sub" / "ok.db").stat().st_size > 0


def test_item6_a_refused_request_changes_no_server_state(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    (tmp_path / "text.db").write_text("not a database\n")
    policy = OperatorPolicy(storage_root=tmp_path)
    own = f"sqlite:///{tmp_path}/b.db"
    with optimizer(policy) as srv, OptimizerClient(srv.address) as client:
        # Refused only when the storage is opened: before the fix these stayed registered
        # and ListStudies failed until a restart.
        for name, storage in (("a", f"sqlite:///{tmp_path}/dir.db"),
                              ("a", f"sqlite:///{tmp_path}/text.db")):
            assert_invalid(_start_error(srv.address, name, storage, override=False), "storage")
            assert client.list_studies() == []
            with pytest.raises(StudyNotFoundError):
                client.get_study(name)
            with pytest.raises(StudyNotFoundError):
                client.resume_study(name)
        client.start_study(study_toml=study_toml("b", storage=own))
        assert client.wait("b", timeout=30).distributions[0].complete == 2
        # A known name cannot be taken over by a new storage, by text or by override.
        assert_invalid(_start_error(srv.address, "b", f"sqlite:///{tmp_path}/new.db",
                                    override=False), "storage")
        assert_invalid(raw_error(srv.address, "ResumeStudy", pb.ResumeStudyRequest(
            study="b", overrides=pb.StudyOverrides(storage=f"sqlite:///{tmp_path}/new.db"))),
            "storage")
        assert [(s.name, s.storage) for s in client.list_studies()] == [("b", own)]
        assert client.get_study("b").distributions[0].complete == 2
    assert not (tmp_path / "new.db").exists()


def test_item7_study_files_come_only_from_the_operators_directories(tmp_path: Path) -> None:
    studies, secret = tmp_path / "studies", tmp_path / "secret"
    studies.mkdir()
    secret.mkdir()
    (secret / "creds.toml").write_text('password = "hunter2"\n[database]\nuser = "admin"\n')
    (secret / "id_rsa").write_text("-----BEGIN KEY-----\nsecretkey\n")
    (studies / "link.toml").symlink_to(secret / "creds.toml")
    (studies / "ok.toml").write_text(study_toml("fromfile"))
    policy = OperatorPolicy(storage_root=tmp_path / "runs", study_dirs=(studies,))
    existing = [str(secret / "creds.toml"), f"{studies}/../secret/creds.toml",
                str(studies / "link.toml"), str(secret / "id_rsa"), "/etc/passwd"]
    missing = [str(secret / "nope.toml"), f"{studies}/../secret/nope.toml", "/nonexistent/x"]
    with optimizer(policy) as srv, OptimizerClient(srv.address) as client:
        answers = set()
        for path in existing + missing:
            for method, request in (("StartStudy", pb.StartStudyRequest(study_file=path)),
                                    ("ResumeStudy", pb.ResumeStudyRequest(study_file=path))):
                error = raw_error(srv.address, method, request)
                trailing = assert_invalid(error, "study_file")
                text = (error.details() or "") + str(trailing)
                for leak in ("hunter2", "password", "admin", "database", "secretkey", "root:"):
                    assert leak not in text
                answers.add((error.details() or "").replace(repr(path), "PATH"))
        # One answer whether the file exists or not: nothing confirms a file outside.
        assert len(answers) == 1, answers
        assert client.list_studies() == []
        client.start_study(study_file=str(studies / "ok.toml"))
        assert client.wait("fromfile", timeout=30).distributions[0].complete == 2
