"""Issue 10, items 4 and 14: hostile sizes and values against a real trainer server.

Every request here goes over gRPC as raw protobuf (no client-side validation),
and every one must come back INVALID_ARGUMENT naming the field and the accepted
range, before the worker starts anything: the trial function is never called.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from tests.trainer.fakes import FakeTrial
from tests.trainer.service.test_service import QUICK
from trainer.contract import INT_RANGES, STR_LIMITS, TrialSpec
from trainer.errors import ConfigError
from trainer.service import status
from trainer.service.api import common_pb2, trainer_pb2, trainer_pb2_grpc
from trainer.service.client import TrainerClient
from trainer.service.server import ServerConfig, TrainerServer, create_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def fake() -> FakeTrial:
    return FakeTrial(round_seconds=0.0)


@pytest.fixture(scope="module")
def server(fake: FakeTrial) -> Iterator[TrainerServer]:
    with create_server(ServerConfig(port=0), trial_fn=fake) as srv:
        yield srv


def raw_run(server: TrainerServer, values: dict[str, Any]) -> grpc.RpcError:
    """Send ``values`` as a raw TrialRequest and return the error the server answers."""
    with grpc.insecure_channel(server.address,
                               options=[("grpc.max_send_message_length", 8 << 20)]) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        request = trainer_pb2.TrialRequest(spec=common_pb2.TrialSpec(**values))
        with pytest.raises(grpc.RpcError) as info:
            list(stub.RunTrial(request, timeout=10))
    return info.value


def assert_rejected(server: TrainerServer, fake: FakeTrial, values: dict[str, Any],
                    field: str) -> grpc.RpcError:
    calls = len(fake.calls)
    error = raw_run(server, {**QUICK, **values})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details()[:200])
    trailing = dict(error.trailing_metadata() or ())
    assert trailing["scalefed-field"] == field and trailing["scalefed-accepted"]
    assert error.details().startswith(f"{field}:")
    assert len(fake.calls) == calls  # rejected before anything ran
    return error


# ------------------------------------------------------------------ item 4 ----

HUGE_SIZES = [  # (field, request values, what the error says is accepted)
    ("samples", {"samples": 100_000, "k": 10}, "[1, 1000]"),
    ("lora_rank", {"lora_rank": 2**31 - 1}, "[1, 512]"),
    ("max_new_tokens", {"max_new_tokens": 2**31 - 1}, "[1, 4096]"),
    ("max_examples", {"max_examples": 2**31 - 1}, "[1, 100000]"),
    ("clients", {"clients": 2**31 - 1}, "[1, 1000]"),
    ("seq_len", {"seq_len": 2**31 - 1}, "[1, 8192]"),
    ("k", {"samples": 1000, "k": 1001}, "[1, 1000]"),
    # each in range, their product (tokens per training batch) not
    ("batch_size", {"batch_size": 512, "seq_len": 8192}, "batch_size x seq_len <= 65536"),
]


@pytest.mark.parametrize(("field", "values", "accepted"), HUGE_SIZES,
                         ids=[h[0] for h in HUGE_SIZES])
def test_size_fields_have_upper_bounds(server: TrainerServer, fake: FakeTrial, field: str,
                                       values: dict[str, Any], accepted: str) -> None:
    error = assert_rejected(server, fake, values, field)
    assert accepted in error.details().split("(accepted: ", 1)[1]


def test_every_int_and_string_field_is_bounded_by_name() -> None:
    ints = {f for f, v in TrialSpec().to_dict().items() if isinstance(v, int)}
    assert ints == set(INT_RANGES)
    strings = {f for f, v in TrialSpec().to_dict().items() if isinstance(v, str)}
    assert strings == set(STR_LIMITS)
    for field, (_, high) in INT_RANGES.items():
        values = {field: high + 1}
        if field == "k":
            values["samples"] = INT_RANGES["samples"][1]
        with pytest.raises(ConfigError) as info:
            TrialSpec(**values)
        assert info.value.field == field and str(high) in (info.value.accepted or "")


# ----------------------------------------------------------------- item 14 ----

BAD_VALUES = [
    ("seed", {"seed": -1}),
    ("partition_seed", {"partition_seed": 2**40}),
    ("eval_seed", {"eval_seed": -5}),
    ("temperature", {"temperature": 1e-300}),
    ("temperature", {"temperature": 1e300}),
    ("fedprox_mu", {"fedprox_mu": 1e300}),
    ("learning_rate", {"learning_rate": 1e300}),
    ("scaling_factor", {"scaling_factor": 1e300}),
]


@pytest.mark.parametrize(("field", "values"), BAD_VALUES,
                         ids=[f"{b[0]}={next(iter(b[1].values()))}" for b in BAD_VALUES])
def test_out_of_range_values_are_invalid_argument(server: TrainerServer, fake: FakeTrial,
                                                  field: str, values: dict[str, Any]) -> None:
    assert_rejected(server, fake, values, field)


MEGABYTE = 1_000_000
LONG_STRINGS = [
    ("model", {"model": "m" * MEGABYTE}),
    ("problems", {"problems": "1," * (MEGABYTE // 2)}),
    ("lora_targets", {"lora_targets": "q" * MEGABYTE}),
    ("distribution", {"distribution": "d" * MEGABYTE}),
    ("corpus", {"corpus": "/" + "c" * MEGABYTE}),
]


@pytest.mark.parametrize(("field", "values"), LONG_STRINGS, ids=[s[0] for s in LONG_STRINGS])
def test_megabyte_strings_are_invalid_argument_not_echoed(
        server: TrainerServer, fake: FakeTrial, field: str, values: dict[str, Any]) -> None:
    error = assert_rejected(server, fake, values, field)
    assert len(error.details()) < 500  # the value is not echoed back
    assert f"at most {STR_LIMITS[field]} characters" in error.details()


def test_statuses_are_clipped_to_fit_in_headers() -> None:
    huge = ConfigError("model", "x" * MEGABYTE, accepted="y" * MEGABYTE)
    answer = status.status_for(huge)
    assert len(answer.details) <= status.MAX_DETAILS
    assert all(len(value) <= status.MAX_METADATA_VALUE for _, value in answer.metadata)
    internal = status.status_for(RuntimeError("z" * MEGABYTE))
    assert internal.code == grpc.StatusCode.INTERNAL and len(internal.details) <= status.MAX_DETAILS
    # Non-ASCII text cannot travel as plain metadata; it is escaped, not dropped.
    escaped = status.status_for(ConfigError("corpus", "bad", accepted="dir under /données"))
    assert dict(escaped.metadata)["scalefed-accepted"].isascii()


def test_server_keeps_serving_after_hostile_requests(server: TrainerServer) -> None:
    with TrainerClient(server.address, retries=0) as client:
        assert client.health() == "SERVING"
        assert client.get_info().busy == 0
        assert client.run_trial(QUICK).k == 10
