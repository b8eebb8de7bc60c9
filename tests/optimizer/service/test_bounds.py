"""Issue 10, item 13, string limits and item 14's deeply nested TOML: every size and time
a client's study asks for is bounded, and each refusal is INVALID_ARGUMENT naming the field
and the accepted range, never INTERNAL or a transport error.

Each case is sent to a real optimizer server over gRPC.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from optimizer.service.api import optimizer_pb2 as pb
from optimizer.service.client import OptimizerClient
from optimizer.service.policy import OperatorPolicy
from optimizer.service.server import OptimizerServer
from optimizer.study.limits import MAX_DEPTH
from optimizer.study.storageurl import clip
from tests.optimizer.service.hostile import assert_invalid, optimizer, raw_error, study_toml
from trainer.service.status import ACCEPTED_KEY

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OptimizerServer]:
    tmp = tmp_path_factory.mktemp("bounds")
    with optimizer(OperatorPolicy(storage_root=tmp, study_dirs=(tmp,))) as srv:
        yield srv


SIZE_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # The attacks: 3000 start-up trials StopStudy could not halt, a lease too short
    # for any trial to finish.
    ("3000 startup trials", {"sampler": "n_startup_trials = 3000"}, "sampler.n_startup_trials",
     "<= 2"),
    ("startup > n_trials", {"sampler": "n_startup_trials = 5", "n_trials": 4},
     "sampler.n_startup_trials", "<= 4"),
    ("heartbeat 1 ms", {"trainer": "heartbeat_s = 0.001\nlease_s = 0.002", "drop": True},
     "trainer.heartbeat_s", "[0.1, 600]"),
    ("lease = 2 x heartbeat", {"trainer": "heartbeat_s = 2.0\nlease_s = 4.0", "drop": True},
     "trainer.lease_s", "(4, 86400]"),
    ("n_trials 1e6", {"n_trials": 10**6}, "n_trials", "<= 1000"),
    ("timeout 1e308", {"trainer": "timeout_s = 1e308"}, "trainer.timeout_s", "604800"),
    ("seed -1", {"top": "seed = -1"}, "seed", ">= 0"),
    ("workers 10000", {"trainer": "workers = 10000"}, "trainer.workers", "<= 64"),
]


def _toml(case: dict[str, Any]) -> str:
    text = study_toml("sized", trainer=case.get("trainer", ""), sampler=case.get("sampler", ""),
                      n_trials=case.get("n_trials", 2), top=case.get("top", ""))
    if case.get("drop"):  # the case sets heartbeat_s / lease_s itself
        text = text.replace("heartbeat_s = 1.0\nlease_s = 3.0\n", "", 1)
    return text


@pytest.mark.parametrize(("case", "change", "field", "accepted"), SIZE_CASES,
                         ids=[c[0] for c in SIZE_CASES])
def test_item13_sizes_and_times_are_bounded(server: OptimizerServer, case: str,
                                            change: dict[str, Any], field: str,
                                            accepted: str) -> None:
    error = raw_error(server.address, "StartStudy", pb.StartStudyRequest(study_toml=_toml(change)))
    trailing = assert_invalid(error, field)
    assert accepted in trailing[ACCEPTED_KEY], trailing
    assert field in (error.details() or "")


def test_item13_override_and_request_strings_are_bounded(server: OptimizerServer,
                                                         tmp_path: Path) -> None:
    big = "x" * 300_000
    cases: list[tuple[str, Any, str]] = [
        ("StartStudy", pb.StartStudyRequest(study_toml=study_toml("o"),
                                            overrides=pb.StudyOverrides(n_trials=10**6)),
         "overrides.n_trials"),
        ("StartStudy", pb.StartStudyRequest(study_toml=study_toml("o") + f"# {big}\n"),
         "study_toml"),
        ("StartStudy", pb.StartStudyRequest(study_toml=study_toml("o").replace(
            'name = "o"', f'name = "{big[:5000]}"')), "name"),
        ("StartStudy", pb.StartStudyRequest(study_toml=f'{big[:100_000]} = 1\n'
                                            + study_toml("o")), clip(big[:100_000], 80)),
        ("StartStudy", pb.StartStudyRequest(study_file=f"{tmp_path}/{big[:10_000]}.toml"),
         "study_file"),
        ("StartStudy", pb.StartStudyRequest(study_toml=study_toml("o"),
                                            overrides=pb.StudyOverrides(storage="sqlite:///"
                                                                        + big[:100_000])),
         "overrides.storage"),
        ("GetStudy", pb.GetStudyRequest(study=big), "study"),
        ("GetBest", pb.GetBestRequest(study=big, distribution="iid"), "study"),
        ("StopStudy", pb.StopStudyRequest(study=big), "study"),
        ("ResumeStudy", pb.ResumeStudyRequest(study=big), "study"),
    ]
    for method, request, field in cases:
        error = raw_error(server.address, method, request)
        assert_invalid(error, field)
        # Megabyte values are never echoed (gRPC's header limit would turn that into
        # RESOURCE_EXHAUSTED).
        assert len(error.details() or "") < 2100
    with OptimizerClient(server.address) as client:
        assert client.list_studies() == []


NESTED = [
    ("arrays", "a = " + "[" * 5000 + "]" * 5000 + "\n"),
    ("inline tables", "a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n"),
    ("dotted keys", "profile." + ".".join(["x"] * 20000) + " = 1\n"),
    ("just too deep", "a = " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n"),
]


@pytest.mark.parametrize(("case", "prefix"), NESTED, ids=[c[0] for c in NESTED])
def test_item14_deeply_nested_toml_is_invalid_argument(server: OptimizerServer, tmp_path: Path,
                                                       case: str, prefix: str) -> None:
    text = prefix + study_toml("nested")
    error = raw_error(server.address, "StartStudy", pb.StartStudyRequest(study_toml=text))
    assert_invalid(error, "study_toml")
    assert "nested" in (error.details() or "")
    path = Path(server.config.policy.study_dirs[0]) / f"nested-{case.replace(' ', '-')}.toml"
    path.write_text(text)
    error = raw_error(server.address, "StartStudy", pb.StartStudyRequest(study_file=str(path)))
    assert_invalid(error, "study_file")
    with OptimizerClient(server.address) as client:
        assert client.health() == "SERVING" and client.list_studies() == []


def test_item13_a_bounded_study_still_runs(server: OptimizerServer) -> None:
    with OptimizerClient(server.address) as client:
        client.start_study(study_toml=study_toml("fine", trainer="timeout_s = 604800"))
        # The limits leave an ordinary study alone.
        reply = client.wait("fine", timeout=30)
        assert reply.error == "" and reply.distributions[0].complete == 2, reply
