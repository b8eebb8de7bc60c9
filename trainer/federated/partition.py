"""Client partitioners: iid, dirichlet(alpha) label skew, natural (per source package).

Every partitioner is seeded, and returns disjoint index sets that together
cover every example exactly once. A minimum client size is enforced with a
bounded number of Dirichlet draws followed by a :class:`ConfigError` naming
the field to change, never an open-ended resampling loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from trainer.errors import ConfigError

DEFAULT_TOPICS = 10
MAX_DIRICHLET_TRIES = 50


@dataclass(frozen=True, kw_only=True)
class ClientStats:
    """One client's share of the data."""

    client: int
    size: int
    histogram: tuple[int, ...]  # examples per label, aligned with Partition.label_names
    tv_distance: float  # total variation to the global label distribution, in [0, 1]


@dataclass(frozen=True, kw_only=True)
class Partition:
    """Which example indices each client holds, plus the labels used to judge skew."""

    method: str = field(metadata={"help": "iid, dirichlet(alpha) or natural"})
    clients: tuple[tuple[int, ...], ...] = field(metadata={"help": "example indices per client"})
    labels: tuple[int, ...] = field(metadata={"help": "label id per example"})
    label_names: tuple[str, ...] = field(metadata={"help": "label id -> name"})

    @property
    def stats(self) -> list[ClientStats]:
        return client_stats(self.clients, self.labels, len(self.label_names))

    @property
    def heterogeneity(self) -> float:
        """Mean total-variation distance of client label distributions to the global one."""
        return mean_tv_distance(self.clients, self.labels, len(self.label_names))

    def sizes(self) -> list[int]:
        return [len(c) for c in self.clients]

    def table(self, *, top: int = 3) -> str:
        """A printable per-client table: size, TV distance, dominant labels."""
        head = (f"{self.method}: {len(self.clients)} clients, {len(self.labels)} examples, "
                f"{len(self.label_names)} labels, mean TV {self.heterogeneity:.3f}")
        rows = [head, f"{'client':>6} {'size':>6} {'TV':>6}  top labels"]
        for st in self.stats:
            order = np.argsort(st.histogram, kind="stable")[::-1][:top]
            tops = ", ".join(f"{self.label_names[i]}:{st.histogram[i]}" for i in order
                             if st.histogram[i] > 0)
            rows.append(f"{st.client:>6} {st.size:>6} {st.tv_distance:>6.3f}  {tops}")
        return "\n".join(rows)

    def to_record(self) -> dict[str, object]:
        """JSON-serialisable summary (no indices) for run records."""
        return {"method": self.method, "sizes": self.sizes(),
                "heterogeneity_mean_tv": self.heterogeneity,
                "labels": list(self.label_names),
                "histograms": [list(s.histogram) for s in self.stats]}


# ----------------------------------------------------------------- stats ----


def _histograms(clients: Sequence[Sequence[int]], labels: Sequence[int],
                n_labels: int) -> np.ndarray:
    lab = np.asarray(labels, dtype=np.int64)
    return np.stack([np.bincount(lab[np.asarray(c, dtype=np.int64)], minlength=n_labels)
                     for c in clients]) if clients else np.zeros((0, n_labels), dtype=np.int64)


def _tv(hist: np.ndarray, global_p: np.ndarray) -> np.ndarray:
    totals = hist.sum(axis=1, keepdims=True)
    p = hist / np.maximum(totals, 1)
    return 0.5 * np.abs(p - global_p).sum(axis=1)


def client_stats(clients: Sequence[Sequence[int]], labels: Sequence[int],
                 n_labels: int) -> list[ClientStats]:
    """Size, label histogram and TV distance to the global distribution per client."""
    hist = _histograms(clients, labels, n_labels)
    global_p = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_labels) / max(
        len(labels), 1)
    tv = _tv(hist, global_p)
    return [ClientStats(client=i, size=int(h.sum()), histogram=tuple(int(x) for x in h),
                        tv_distance=float(t)) for i, (h, t) in enumerate(zip(hist, tv))]


def mean_tv_distance(clients: Sequence[Sequence[int]], labels: Sequence[int],
                     n_labels: int) -> float:
    """The heterogeneity measure: mean TV distance of clients to the global label mix."""
    stats = client_stats(clients, labels, n_labels)
    return float(np.mean([s.tv_distance for s in stats])) if stats else 0.0


# ------------------------------------------------------------ partitioners ----


def _check_feasible(n: int, k: int, min_size: int) -> None:
    if k < 1:
        raise ConfigError("clients", f"must be >= 1, got {k}", accepted=">= 1")
    if k * min_size > n:
        raise ConfigError("clients", f"{k} clients x min size {min_size} needs {k * min_size} "
                          f"examples, corpus has {n}", accepted=f"<= {n // max(min_size, 1)}")


def iid_partition(n: int, k: int, *, seed: int, min_size: int = 1) -> list[list[int]]:
    """Uniform random split into k near-equal shares (sizes differ by at most one)."""
    _check_feasible(n, k, min_size)
    perm = np.random.default_rng(seed).permutation(n)
    return [sorted(int(i) for i in part) for part in np.array_split(perm, k)]


def _dirichlet_draw(labels: np.ndarray, k: int, alpha: float,
                    rng: np.random.Generator) -> list[list[int]]:
    clients: list[list[int]] = [[] for _ in range(k)]
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(k, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(np.int64)
        for client, part in enumerate(np.split(idx, cuts)):
            clients[client].extend(int(i) for i in part)
    return [sorted(c) for c in clients]


def dirichlet_partition(labels: Sequence[int], k: int, *, alpha: float, seed: int,
                        min_size: int = 1,
                        max_tries: int = MAX_DIRICHLET_TRIES) -> list[list[int]]:
    """Label skew: each label's examples are split over clients by a Dir(alpha) draw.

    Small alpha concentrates each label on few clients. A draw leaving any
    client below ``min_size`` is redrawn, at most ``max_tries`` times.
    """
    lab = np.asarray(labels, dtype=np.int64)
    _check_feasible(len(lab), k, min_size)
    if not alpha > 0:
        raise ConfigError("alpha", f"must be > 0, got {alpha}", accepted="(0, inf)")
    rng = np.random.default_rng(seed)
    smallest = 0
    for _ in range(max_tries):
        clients = _dirichlet_draw(lab, k, alpha, rng)
        smallest = min(len(c) for c in clients)
        if smallest >= min_size:
            return clients
    raise ConfigError(
        "alpha", f"dirichlet(alpha={alpha}) over {k} clients left a client with {smallest} < "
        f"{min_size} examples in all {max_tries} draws (seed {seed})",
        accepted="a larger alpha, fewer clients, more examples, or a smaller minimum client size")


def natural_partition(groups: Sequence[str], k: int, *, min_size: int = 1) -> list[list[int]]:
    """One client per source package; with more packages than clients, packages are
    grouped into k clients (largest first onto the currently smallest client).

    Packages stay whole, so this split needs no seed.
    """
    _check_feasible(len(groups), k, min_size)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    if len(members) < k:
        raise ConfigError("clients", f"natural split has only {len(members)} source packages "
                          f"for {k} clients", accepted=f"<= {len(members)}")
    clients: list[list[int]] = [[] for _ in range(k)]
    # Largest-first onto least-loaded keeps clients as even as whole packages allow;
    # ties are broken by name and client id, so the grouping is deterministic.
    for name in sorted(members, key=lambda g: (-len(members[g]), g)):
        target = min(range(k), key=lambda c: (len(clients[c]), c))
        clients[target].extend(members[name])
    small = min(len(c) for c in clients)
    if small < min_size:
        raise ConfigError("clients", f"natural split leaves a client with {small} < {min_size} "
                          "examples", accepted="fewer clients or a smaller minimum client size")
    return [sorted(c) for c in clients]


# ----------------------------------------------------------------- labels ----


def topic_labels(texts: Sequence[str], *, n_topics: int = DEFAULT_TOPICS,
                 seed: int = 0) -> np.ndarray:
    """Topic label per text: TF-IDF over identifiers, then seeded k-means."""
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    n_topics = max(1, min(n_topics, len(texts)))
    tfidf = TfidfVectorizer(token_pattern=r"[A-Za-z_][A-Za-z0-9_]+", max_features=5000,
                            sublinear_tf=True, min_df=2 if len(texts) > 50 else 1)
    matrix = tfidf.fit_transform(texts)
    km = KMeans(n_clusters=n_topics, random_state=seed, n_init=3)
    return np.asarray(km.fit_predict(matrix), dtype=np.int64)


def _encode(names: Sequence[str]) -> tuple[list[int], tuple[str, ...]]:
    uniq = tuple(sorted(set(names)))
    index = {n: i for i, n in enumerate(uniq)}
    return [index[n] for n in names], uniq


def needs_topic_labels(distribution: str, label_source: str) -> bool:
    """Whether the partition of ``distribution`` uses topic labels.

    Only a dirichlet split over topics does: iid splits uniformly whatever the
    labels, natural splits by package, so neither pays for TF-IDF + k-means.
    """
    return distribution == "dirichlet" and label_source == "topic"


def make_partition(*, texts: Sequence[str], packages: Sequence[str], distribution: str,
                   clients: int, alpha: float = 0.5, seed: int = 0, min_size: int = 1,
                   label_source: str = "topic", n_topics: int = DEFAULT_TOPICS,
                   topics: Sequence[int] | None = None) -> Partition:
    """Partition examples (given by their text and source package) among clients.

    ``label_source`` picks the labels that dirichlet skews over and that the
    stats measure: ``topic`` (TF-IDF + k-means, seeded) or ``package``.
    ``topics`` passes topic labels already computed for ``texts`` (see
    :mod:`trainer.federated.cache`). Topic labels are computed only where the
    split needs them (:func:`needs_topic_labels`); the iid and natural splits,
    and so their stats, use the packages.
    """
    if label_source not in ("topic", "package"):
        raise ConfigError("label_source", f"unknown value {label_source!r}",
                          accepted="topic, package")
    if topics is not None and len(topics) != len(texts):
        raise ValueError(f"{len(topics)} topic labels for {len(texts)} texts")
    if needs_topic_labels(distribution, label_source):
        raw = (np.asarray(topics, dtype=np.int64) if topics is not None
               else topic_labels(texts, n_topics=n_topics, seed=seed))
        labels = [int(x) for x in raw]
        names = tuple(f"topic{i}" for i in range(int(raw.max()) + 1))
    else:
        labels, names = _encode(packages)
    if distribution == "iid":
        parts = iid_partition(len(texts), clients, seed=seed, min_size=min_size)
        method = "iid"
    elif distribution == "dirichlet":
        parts = dirichlet_partition(labels, clients, alpha=alpha, seed=seed, min_size=min_size)
        method = f"dirichlet({alpha:g})"
    elif distribution == "natural":
        parts = natural_partition(packages, clients, min_size=min_size)
        method = "natural"
    else:
        raise ConfigError("distribution", f"unknown value {distribution!r}",
                          accepted="iid, dirichlet, natural")
    return Partition(method=method, clients=tuple(tuple(p) for p in parts),
                     labels=tuple(labels), label_names=names)
