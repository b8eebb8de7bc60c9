"""Issue 10, items 8, 9 and 14 at the corpus layer: bounded, cancellable, clear about bad files."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from trainer.errors import ConfigError, TrialCancelledError
from trainer.federated import corpus
from trainer.federated.corpus import iter_source_files, load_corpus

DOC_FN = 'def f{i}(x):\n    """Doc {i}."""\n    return x + {i}\n'


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEFED_CACHE", str(tmp_path / "cache"))


def make_tree(root: Path, files: int) -> Path:
    for i in range(files):
        (root / f"mod{i}.py").parent.mkdir(parents=True, exist_ok=True)
        (root / f"mod{i}.py").write_text(DOC_FN.format(i=i))
    return root


def test_extraction_stops_soon_after_cancel(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_tree(tmp_path / "tree", 200)
    seen: list[str] = []
    real = corpus.function_examples

    def slow(source: str, *, module: str):  # type: ignore[no-untyped-def]
        seen.append(module)
        time.sleep(0.05)  # a slow disk: 200 files take 10 s
        return real(source, module=module)

    monkeypatch.setattr(corpus, "function_examples", slow)
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(TrialCancelledError, match="corpus extraction"):
        load_corpus(str(tree), decontaminate=False, cancel=cancel)
    assert time.monotonic() - start < 3 and len(seen) < 60
    assert not list((tmp_path / "cache").rglob("*.jsonl"))  # nothing half-done was cached


def test_tree_walk_and_data_rows_poll_cancel(tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TrialCancelledError):
        list(iter_source_files(make_tree(tmp_path / "t", 3), cancel=cancel))
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "p", "completion": "c"}\n')
    with pytest.raises(TrialCancelledError):
        load_corpus(str(data), decontaminate=False, cancel=cancel)


def test_tree_has_a_file_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus, "MAX_TREE_FILES", 5)
    with pytest.raises(ConfigError, match="more than 5 Python files") as info:
        load_corpus(str(make_tree(tmp_path / "big", 6)), decontaminate=False)
    assert info.value.field == "corpus"


def test_symlinks_out_of_the_tree_fifos_and_huge_files_are_not_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text(DOC_FN.format(i=99).replace("Doc 99", "SECRET"))
    tree = make_tree(tmp_path / "tree", 2)
    (tree / "leak.py").symlink_to(outside / "secret.py")
    (tree / "inside.py").symlink_to(tree / "mod0.py")  # a link within the tree is fine
    os.mkfifo(tree / "blocks.py")  # reading it would hang the worker
    monkeypatch.setattr(corpus, "MAX_SOURCE_BYTES", 500)
    (tree / "huge.py").write_text(DOC_FN.format(i=7) + "#" * 600)
    names = sorted(p.name for p in iter_source_files(tree))
    assert names == ["inside.py", "mod0.py", "mod1.py"]
    examples = load_corpus(str(tree), decontaminate=False)
    assert not any("SECRET" in ex.prompt for ex in examples) and len(examples) == 3


@pytest.mark.parametrize("text", ['{"prompt": "p", "completion": ', "not json at all\n", ""])
def test_malformed_data_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_corpus(str(bad), decontaminate=False)
    assert info.value.field == "corpus" and len(str(info.value)) < 600


def test_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", 2)
    first = load_corpus(str(tree), decontaminate=False)
    (cached,) = (tmp_path / "cache").rglob("*.jsonl")
    cached.write_text("{truncated")
    assert load_corpus(str(tree), decontaminate=False) == first
