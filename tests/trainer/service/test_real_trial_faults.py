"""Issue 10, items 9 and 14, with the real trial function behind a real server.

The model is tiny-random; the corpora are small trees and files under the
worker's corpus root. Extraction is slowed per file (a slow disk) so that a
cancel lands while it runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.service.test_service import run_in_thread, wait_until
from trainer.errors import ConfigError, TrialCancelledError
from trainer.federated import corpus
from trainer.service.client import TrainerClient
from trainer.service.server import ServerConfig, TrainerServer, create_server
from trainer.service.worker import WorkerPolicy

pytestmark = pytest.mark.timeout(180)

TINY: dict[str, Any] = {
    "model": "tiny-random", "scaling_factor": 1.0, "participation": 0.5, "clients": 2,
    "budget_mode": "rounds", "rounds": 1, "local_steps": 1, "batch_size": 2, "seq_len": 64,
    "max_examples": 16, "problems": "2", "samples": 2, "k": 2, "max_new_tokens": 8,
}
FILES = 400
SECONDS_PER_FILE = 0.05  # uncancelled, extraction would take 20 s


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("corpora")
    tree = base / "slowtree"
    tree.mkdir()
    for i in range(FILES):
        (tree / f"m{i}.py").write_text(f'def g{i}(x):\n    """Doc."""\n    return x * {i}\n')
    (base / "bad.jsonl").write_text('{"prompt": "def f():", "completion": \n')
    return base


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[TrainerServer]:
    from trainer.trial import run_trial

    policy = WorkerPolicy(corpus_roots=(root,))
    with create_server(ServerConfig(port=0, policy=policy), trial_fn=run_trial) as srv:
        yield srv


def test_cancel_reaches_corpus_extraction(server: TrainerServer, root: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    extracting = threading.Event()
    seen: list[str] = []
    real = corpus.function_examples

    def slow(source: str, *, module: str):  # type: ignore[no-untyped-def]
        seen.append(module)
        extracting.set()
        time.sleep(SECONDS_PER_FILE)
        return real(source, module=module)

    monkeypatch.setattr(corpus, "function_examples", slow)
    monkeypatch.setattr(corpus, "_cache_path", lambda key: tmp_path / f"{key}.jsonl")
    with TrainerClient(server.address, retries=0) as client:
        spec = {**TINY, "corpus": str(root / "slowtree")}
        thread, out = run_in_thread(lambda: client.run_trial(spec, trial_id="slow-corpus"))
        assert extracting.wait(120), out  # the model loaded and extraction began
        cancelled_at = time.monotonic()
        assert client.cancel_trial("slow-corpus")
        thread.join(10)
        assert isinstance(out.get("error"), TrialCancelledError), out
        assert wait_until(lambda: client.get_info().idle == 1, 5)
        assert time.monotonic() - cancelled_at < 5
        read = len(seen)
        time.sleep(4 * SECONDS_PER_FILE)
        assert len(seen) == read < FILES  # extraction stopped; it did not finish unseen


def test_malformed_jsonl_corpus_is_invalid_argument(server: TrainerServer, root: Path) -> None:
    with TrainerClient(server.address, retries=0) as client:
        with pytest.raises(ConfigError) as info:
            client.run_trial({**TINY, "corpus": str(root / "bad.jsonl")}, timeout=120)
        assert info.value.field == "corpus" and "cannot read" in str(info.value)
        assert client.get_info().idle == 1
