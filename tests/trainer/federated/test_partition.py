"""Partitioners: disjoint, complete, seeded; Dirichlet skew measured; clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.errors import ConfigError
from trainer.federated.partition import (
    dirichlet_partition,
    iid_partition,
    make_partition,
    mean_tv_distance,
    natural_partition,
    topic_labels,
)

N, K = 600, 8
LABELS = [i % 6 for i in range(N)]
PACKAGES = [f"pkg{i % 23}" for i in range(N)]


def _assert_disjoint_complete(parts: list[list[int]], n: int) -> None:
    flat = [i for p in parts for i in p]
    assert len(flat) == len(set(flat)) == n
    assert set(flat) == set(range(n))


@pytest.mark.parametrize("name", ["iid", "dirichlet", "natural"])
def test_partitions_disjoint_complete_and_seeded(name: str) -> None:
    def run(seed: int) -> list[list[int]]:
        if name == "iid":
            return iid_partition(N, K, seed=seed, min_size=10)
        if name == "dirichlet":
            return dirichlet_partition(LABELS, K, alpha=0.5, seed=seed, min_size=5)
        return natural_partition(PACKAGES, K, min_size=5)

    first = run(1)
    _assert_disjoint_complete(first, N)
    assert len(first) == K and min(len(p) for p in first) >= 5
    assert run(1) == first
    if name != "natural":  # the natural split is unseeded by design
        assert run(2) != first


def test_iid_sizes_are_even() -> None:
    sizes = [len(p) for p in iid_partition(103, 10, seed=0)]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_skew_grows_as_alpha_falls() -> None:
    def skew(alpha: float) -> float:
        return float(np.mean([
            mean_tv_distance(dirichlet_partition(LABELS, K, alpha=alpha, seed=s), LABELS, 6)
            for s in range(8)]))

    measured = [skew(a) for a in (100.0, 1.0, 0.1)]
    assert measured[0] < measured[1] < measured[2], measured
    assert measured[0] < 0.1 and measured[2] > 0.5, measured


def test_impossible_dirichlet_errors_clearly() -> None:
    with pytest.raises(ConfigError) as info:
        dirichlet_partition(LABELS, K, alpha=0.01, seed=0, min_size=60, max_tries=20)
    assert info.value.field == "alpha" and "larger alpha" in str(info.value)
    with pytest.raises(ConfigError) as info:
        dirichlet_partition(LABELS, K, alpha=1.0, seed=0, min_size=N)
    assert info.value.field == "clients"


def test_natural_groups_packages_and_errors() -> None:
    parts = natural_partition(PACKAGES, K)
    owners = {}
    for client, part in enumerate(parts):
        for i in part:
            owners.setdefault(PACKAGES[i], set()).add(client)
    assert all(len(c) == 1 for c in owners.values())  # packages stay whole
    one_each = natural_partition(PACKAGES, 23)
    assert sorted(len({PACKAGES[i] for i in p}) for p in one_each) == [1] * 23
    with pytest.raises(ConfigError, match="23 source packages") as info:
        natural_partition(PACKAGES, 24)
    assert info.value.field == "clients"


def test_topic_labels_are_seeded_clusters() -> None:
    texts = ([f"socket connect send recv host port {i}" for i in range(20)]
             + [f"parse json decode encode string {i}" for i in range(20)])
    labels = topic_labels(texts, n_topics=2, seed=0)
    assert list(labels) == list(topic_labels(texts, n_topics=2, seed=0))
    assert len(set(labels[:20])) == 1 and len(set(labels[20:])) == 1
    assert labels[0] != labels[-1]


def test_make_partition_stats_and_table() -> None:
    texts = [f"word{i % 6} common other{i % 5}" for i in range(N)]
    part = make_partition(texts=texts, packages=PACKAGES, distribution="dirichlet", clients=K,
                          alpha=0.1, seed=3, min_size=2, label_source="package")
    stats = part.stats
    assert [s.size for s in stats] == part.sizes() and sum(part.sizes()) == N
    assert all(sum(s.histogram) == s.size for s in stats)
    assert part.heterogeneity == pytest.approx(np.mean([s.tv_distance for s in stats]))
    table = part.table()
    assert "dirichlet(0.1)" in table and len(table.splitlines()) == K + 2
    iid = make_partition(texts=texts, packages=PACKAGES, distribution="iid", clients=K, seed=3)
    assert iid.heterogeneity < part.heterogeneity
    assert iid.to_record()["sizes"] == iid.sizes()
