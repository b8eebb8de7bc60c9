"""Issue 10, items 4 (model pool), 8 and 16: what a worker reads, and how it says where it listens.

The operator names at start-up the models and corpora a worker reads (names,
and root directories); a request picks among those. Hostile requests go to a
real server over gRPC; the pool test runs the pool behind a real server too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.trainer.fakes import FakeTrial
from tests.trainer.service.test_service import QUICK
from trainer.contract import TrialEvent, TrialResult, TrialSpec
from trainer.errors import ConfigError
from trainer.models import LoadedModel
from trainer.pool import ModelPool
from trainer.service.api import common_pb2, trainer_pb2, trainer_pb2_grpc
from trainer.service.client import TrainerClient
from trainer.service.rpc import ListenConfig, is_loopback
from trainer.service.server import ServerConfig, TrainerServer, create_server
from trainer.service.worker import WorkerPolicy

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[3]


@dataclass(kw_only=True)
class PooledFake:
    """A trial function that borrows its model from a real ModelPool (with a fake loader)."""

    pool: ModelPool
    fake: FakeTrial

    def __call__(self, spec: TrialSpec, *, on_event: Callable[[TrialEvent], None] | None = None,
                 cancel: threading.Event | None = None) -> TrialResult:
        with self.pool.borrow(spec.model):
            return self.fake(spec, on_event=on_event, cancel=cancel)


def fake_loader(name: str) -> LoadedModel:
    return LoadedModel(model=object(), tokenizer=None, name=name, source=name, load_seconds=0.0)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("boundary")
    out = {name: base / name for name in ("models", "corpora", "outside")}
    for path in out.values():
        path.mkdir()
    for i in range(4):
        (out["models"] / f"m{i}").mkdir()
    (out["outside"] / "secret-model").mkdir()
    (out["outside"] / "secrets.py").write_text('def key():\n    """The key."""\n    return 1\n')
    (out["corpora"] / "tree").mkdir()
    (out["corpora"] / "data.jsonl").write_text('{"prompt": "p", "completion": "c"}\n')
    (out["models"] / "escape").symlink_to(out["outside"] / "secret-model")
    (out["corpora"] / "escape").symlink_to(out["outside"])
    return out


@pytest.fixture(scope="module")
def pooled(dirs: dict[str, Path]) -> Iterator[tuple[TrainerServer, PooledFake]]:
    policy = WorkerPolicy(model_roots=(dirs["models"],), corpus_roots=(dirs["corpora"],))
    trial = PooledFake(pool=ModelPool(loader=fake_loader, max_idle=2),
                       fake=FakeTrial(round_seconds=0.0))
    with create_server(ServerConfig(port=0, policy=policy), trial_fn=trial) as srv:
        yield srv, trial


def raw_error(server: TrainerServer, values: dict[str, Any]) -> grpc.RpcError:
    with grpc.insecure_channel(server.address) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        request = trainer_pb2.TrialRequest(spec=common_pb2.TrialSpec(**{**QUICK, **values}))
        with pytest.raises(grpc.RpcError) as info:
            list(stub.RunTrial(request, timeout=10))
    return info.value


# ------------------------------------------------------------------ item 8 ----


def hostile_paths(dirs: dict[str, Path]) -> list[tuple[str, str]]:
    models, corpora, outside = dirs["models"], dirs["corpora"], dirs["outside"]
    return [
        ("corpus", "/"),
        ("corpus", str(outside)),
        ("corpus", str(outside / "secrets.py")),
        ("corpus", f"{corpora}/../outside"),
        ("corpus", str(corpora / "escape")),  # a symlink out of the root
        ("corpus", "hf:some/dataset"),  # a hub data set nobody allowed
        ("model", "/etc"),
        ("model", str(outside / "secret-model")),
        ("model", f"{models}/m0/../../outside/secret-model"),
        ("model", str(models / "escape")),
        ("model", "HuggingFaceTB/SmolLM2-1.7B"),  # a hub id nobody allowed
    ]


def test_requests_cannot_read_outside_the_operators_roots(
        pooled: tuple[TrainerServer, PooledFake], dirs: dict[str, Path]) -> None:
    server, trial = pooled
    calls = len(trial.fake.calls)
    for field, value in hostile_paths(dirs):
        error = raw_error(server, {field: value})
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, value, error.details())
        assert dict(error.trailing_metadata() or ())["scalefed-field"] == field
        assert "not a" in error.details() and "this worker serves" in error.details()
    assert len(trial.fake.calls) == calls and trial.pool.loads == 0  # nothing was read or run


def test_rejections_do_not_tell_whether_a_path_exists(
        pooled: tuple[TrainerServer, PooledFake], dirs: dict[str, Path]) -> None:
    server, _ = pooled
    present = raw_error(server, {"corpus": str(dirs["outside"] / "secrets.py")}).details()
    absent = raw_error(server, {"corpus": str(dirs["outside"] / "nothere.py")}).details()
    assert present.replace("secrets.py", "X") == absent.replace("nothere.py", "X")


def test_requests_pick_among_the_operators_models_and_corpora(
        pooled: tuple[TrainerServer, PooledFake], dirs: dict[str, Path]) -> None:
    server, trial = pooled
    allowed = [{"model": "tiny-random"}, {"model": str(dirs["models"] / "m1")},
               {"corpus": str(dirs["corpora"] / "tree")},
               {"corpus": f"{dirs['corpora'] / 'data.jsonl'}#prompt=prompt,completion=completion"}]
    with TrainerClient(server.address, retries=0) as client:
        for values in allowed:
            assert client.run_trial({**QUICK, **values}).k == 10, values
    assert trial.fake.calls[-1].corpus.endswith("completion=completion")


def test_policy_roots_must_exist_and_defaults_must_be_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model_roots"):
        WorkerPolicy(model_roots=(tmp_path / "missing",))
    with pytest.raises(ConfigError) as info:
        WorkerPolicy(default_model="/etc")
    assert info.value.field == "default_model"
    assert WorkerPolicy(model_roots=(tmp_path,), default_model=str(tmp_path)).default_model


# ------------------------------------------------------------ item 4: pool ----


def test_pool_loads_one_copy_per_directory_however_spelled(
        pooled: tuple[TrainerServer, PooledFake], dirs: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    server, trial = pooled
    monkeypatch.chdir(dirs["models"].parent)
    m2 = dirs["models"] / "m2"
    spellings = [str(m2), f"{m2}/", f"{dirs['models']}//m2", "./models/m2", "models/./m2/"]
    loads = trial.pool.loads
    with TrainerClient(server.address, retries=0) as client:
        for name in spellings:
            assert client.run_trial({**QUICK, "model": name}).k == 10
    assert trial.pool.loads == loads + 1
    assert str(m2.resolve()) in trial.pool.idle_keys()


def test_pool_keeps_at_most_max_idle_models(pooled: tuple[TrainerServer, PooledFake],
                                            dirs: dict[str, Path]) -> None:
    server, trial = pooled
    with TrainerClient(server.address, retries=0) as client:
        for i in range(4):
            client.run_trial({**QUICK, "model": str(dirs["models"] / f"m{i}")})
    keys = trial.pool.idle_keys()
    assert len(keys) == 2 and keys[-1] == str((dirs["models"] / "m3").resolve())


def test_pool_drops_a_model_that_still_carries_an_adapter() -> None:
    pool = ModelPool(loader=fake_loader, max_idle=2)
    with contextlib.suppress(RuntimeError), pool.borrow("tiny-random") as loaded:
        object.__setattr__(loaded, "model", type("Peft", (), {"peft_config": {}})())
        raise RuntimeError("adapter could not be removed")
    assert pool.idle_keys() == []
    with contextlib.suppress(RuntimeError), pool.borrow("tiny-random"):
        raise RuntimeError("failed before training: the model is clean")
    assert pool.idle_keys() == ["tiny-random"]


# ----------------------------------------------------------------- item 16 ----


def test_exposure_warnings() -> None:
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::", "")] \
        == [True, True, True, False, False, False]
    assert ListenConfig(host="127.0.0.1").exposure_warning() is None
    assert "without a bearer token" in (ListenConfig(host="0.0.0.0").exposure_warning() or "")
    assert "without TLS" in (ListenConfig(host="0.0.0.0", token="t").exposure_warning() or "")


def test_cli_on_all_interfaces_warns_and_prints_the_real_bind_address(tmp_path: Path) -> None:
    """`trainer serve --host 0.0.0.0` with no token: a warning, and the line says 0.0.0.0."""
    models = tmp_path / "models"
    (models / "ckpt").mkdir(parents=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "optimizer.cli", "trainer", "serve", "--host", "0.0.0.0",
         "--port", "0", "--trial-fn", "tests.trainer.fakes:fake_trial",
         "--model-root", str(models), "--grace", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert line.startswith("scalefed trainer listening on 0.0.0.0:"), line
        port = int(line.split("0.0.0.0:")[1].split()[0])
        assert f"dial 127.0.0.1:{port}" in line
        with TrainerClient(f"127.0.0.1:{port}", retries=0) as client:
            assert client.run_trial({**QUICK, "model": str(models / "ckpt")}).k == 10
            with pytest.raises(ConfigError, match="not a model this worker serves"):
                client.run_trial({**QUICK, "model": str(tmp_path)})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert "WARNING" in (stderr := proc.stderr.read()) and "without a bearer token" in stderr
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
