"""Topic-label and partition cache: identical results, keyed by content, no labels for iid."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

import trainer.federated.cache as cache_mod
import trainer.federated.partition as partition_mod
from trainer.federated.cache import (
    DiskCache,
    cached_partition,
    cached_topic_labels,
    texts_digest,
)
from trainer.federated.partition import make_partition, topic_labels

WORDS = ["socket send recv buffer", "path join split dirname", "regex match group pattern",
         "json dumps loads encoder", "thread lock acquire release"]
TEXTS = [f"{WORDS[i % 5]} item{i} value{i % 7}" for i in range(120)]
PACKAGES = [f"pkg{i % 9}" for i in range(120)]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts topic-label computations, wherever they are called from."""
    seen: list[int] = []

    def counting(texts: Sequence[str], *, n_topics: int = 10, seed: int = 0) -> np.ndarray:
        seen.append(len(texts))
        return topic_labels(texts, n_topics=n_topics, seed=seed)

    monkeypatch.setattr(cache_mod, "topic_labels", counting)
    monkeypatch.setattr(partition_mod, "topic_labels", counting)
    return seen


def _part(cache: DiskCache, **changes: object) -> partition_mod.Partition:
    args: dict[str, object] = {"texts": TEXTS, "packages": PACKAGES, "distribution": "dirichlet",
                               "clients": 4, "alpha": 0.3, "seed": 2, "min_size": 3}
    return cached_partition(**{**args, **changes}, cache=cache)  # type: ignore[arg-type]


def test_topic_labels_cached_by_content(tmp_path: Path, calls: list[int]) -> None:
    cache = DiskCache(root=tmp_path)
    first = cached_topic_labels(TEXTS, n_topics=4, seed=1, cache=cache)
    assert first == [int(x) for x in topic_labels(TEXTS, n_topics=4, seed=1)]
    assert cached_topic_labels(TEXTS, n_topics=4, seed=1, cache=cache) == first
    assert calls == [120]  # the second call was a hit
    cached_topic_labels(TEXTS, n_topics=4, seed=2, cache=cache)  # another seed: a miss
    changed = [*TEXTS[:-1], "a different last function"]
    cached_topic_labels(changed, n_topics=4, seed=1, cache=cache)  # a changed corpus: a miss
    assert calls == [120, 120, 120]
    assert texts_digest(["ab", "c"]) != texts_digest(["a", "bc"])  # boundaries count


def test_partition_cached_identical_and_keyed_by_content(tmp_path: Path,
                                                         calls: list[int]) -> None:
    cache = DiskCache(root=tmp_path)
    first = _part(cache)
    direct = make_partition(texts=TEXTS, packages=PACKAGES, distribution="dirichlet", clients=4,
                            alpha=0.3, seed=2, min_size=3)
    assert first == direct
    calls.clear()  # one computation each so far: the cached call and the direct one
    assert _part(cache) == first and calls == []
    # another alpha reuses the cached labels; only the split is new
    assert _part(cache, alpha=5.0).clients != first.clients and calls == []
    changed = [*TEXTS[:-1], "a different last function"]
    assert _part(cache, texts=changed).labels is not None and calls == [120]
    natural = _part(cache, distribution="natural")
    moved = _part(cache, distribution="natural", packages=[*PACKAGES[:-1], "pkg0"])
    assert natural.clients != moved.clients  # a changed package misses too


def test_unreadable_or_foreign_entry_is_a_miss(tmp_path: Path, calls: list[int]) -> None:
    cache = DiskCache(root=tmp_path)
    first = _part(cache)
    entries = sorted((tmp_path / "partition").glob("*.json"))
    assert len(entries) == 1
    entries[0].write_text("{not json")
    assert _part(cache) == first
    entries[0].write_text('{"method": "iid", "clients": [[0]], "labels": [0], '
                          '"label_names": ["x"]}')  # does not cover the examples
    assert _part(cache) == first


@pytest.mark.parametrize("build", [
    lambda: make_partition(texts=TEXTS, packages=PACKAGES, distribution="iid", clients=4),
    lambda: make_partition(texts=TEXTS, packages=PACKAGES, distribution="natural", clients=4),
    lambda: make_partition(texts=TEXTS, packages=PACKAGES, distribution="dirichlet", clients=4,
                           label_source="package"),
])
def test_splits_that_need_no_topics_compute_none(build: Callable[[], object],
                                                 calls: list[int]) -> None:
    build()
    assert calls == []


def test_iid_computes_no_labels_through_the_cache(tmp_path: Path, calls: list[int]) -> None:
    part = _part(DiskCache(root=tmp_path), distribution="iid")
    assert calls == [] and part.method == "iid"
    assert part.label_names == tuple(sorted(set(PACKAGES)))  # stats over packages
    assert not list(tmp_path.glob("topic_labels/*"))
    _part(DiskCache(root=tmp_path))  # dirichlet does compute them
    assert calls == [120]


def test_unwritable_cache_only_costs_the_recomputation(tmp_path: Path,
                                                       calls: list[int]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = DiskCache(root=blocker / "below")  # mkdir under a file fails
    assert _part(cache) == _part(cache)
    assert calls == [120, 120]
