"""The one status-code mapping (both directions) and the proto <-> domain conversion."""

from __future__ import annotations

import grpc
import pytest

from trainer.contract import TrialSpec
from trainer.errors import CapacityError, ConfigError, ModelNotFoundError, TrialCancelledError
from trainer.service import convert
from trainer.service.api import common_pb2
from trainer.service.status import (
    AuthenticationError,
    DuplicateTrialError,
    RemoteInternalError,
    TrialDeadlineExceededError,
    WorkerUnavailableError,
)


def test_status_codes_map_back_to_exceptions() -> None:
    from trainer.service import status

    cases: list[tuple[Exception, grpc.StatusCode, type[Exception]]] = [
        (ConfigError("alpha", "bad", accepted="(0, inf)"), grpc.StatusCode.INVALID_ARGUMENT,
         ConfigError),
        (ModelNotFoundError("m"), grpc.StatusCode.NOT_FOUND, ModelNotFoundError),
        (CapacityError("busy"), grpc.StatusCode.RESOURCE_EXHAUSTED, CapacityError),
        (TrialCancelledError("c"), grpc.StatusCode.CANCELLED, TrialCancelledError),
        (TrialDeadlineExceededError("d"), grpc.StatusCode.DEADLINE_EXCEEDED,
         TrialDeadlineExceededError),
        (DuplicateTrialError("dup"), grpc.StatusCode.ALREADY_EXISTS, DuplicateTrialError),
        (WorkerUnavailableError("drain"), grpc.StatusCode.UNAVAILABLE, WorkerUnavailableError),
        (AuthenticationError("auth"), grpc.StatusCode.UNAUTHENTICATED, AuthenticationError),
        (KeyError("x"), grpc.StatusCode.INTERNAL, RemoteInternalError),
    ]
    class FakeRpcError(grpc.RpcError):
        def __init__(self, st: status.Status) -> None:
            self.st = st

        def code(self) -> grpc.StatusCode:
            return self.st.code

        def details(self) -> str:
            return self.st.details

        def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
            return self.st.metadata

    for exc, code, back in cases:
        st = status.status_for(exc)
        assert st.code == code, exc
        rebuilt = status.exception_from_rpc_error(FakeRpcError(st))
        assert type(rebuilt) is back, (exc, rebuilt)
        if isinstance(exc, ConfigError):
            assert isinstance(rebuilt, ConfigError)
            assert (rebuilt.field, rebuilt.accepted, str(rebuilt)) == ("alpha", "(0, inf)", str(exc))


def test_proto_spec_mirrors_trial_spec() -> None:
    proto_fields = [f.name for f in common_pb2.TrialSpec.DESCRIPTOR.fields]
    assert sorted(proto_fields) == sorted(convert.SPEC_FIELDS)
    spec = TrialSpec(model="tiny-random", distribution="dirichlet", alpha=0.1, seed=2**32 - 1,
                     lora_targets="q_proj", problems="HumanEval/1,HumanEval/2")
    assert convert.spec_from_proto(convert.spec_to_proto(spec)) == spec
    with pytest.raises(ConfigError, match="clients"):
        convert.spec_to_proto({"clients": 2**40})


def test_partial_mapping_leaves_fields_unset_for_server_defaults() -> None:
    msg = convert.spec_to_proto({"scaling_factor": 1.5, "participation": 0.2, "seed": None})
    assert msg.HasField("scaling_factor") and not msg.HasField("model")
    assert not msg.HasField("seed")
    spec = convert.spec_from_proto(msg, defaults={"model": "tiny-random"})
    assert (spec.model, spec.scaling_factor, spec.clients) == ("tiny-random", 1.5, TrialSpec().clients)
    with pytest.raises(ConfigError, match="participation: is required"):
        convert.spec_from_proto(convert.spec_to_proto({"scaling_factor": 1.0}))
