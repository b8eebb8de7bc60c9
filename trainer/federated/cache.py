"""Content-keyed disk cache for what a trial derives from its corpus: topic labels, partitions.

Every trial of a study partitions the same examples, and the topic labels
(TF-IDF + k-means, ~2.4 s per 2,000 examples on 2 cores) depend only on the
texts, the topic count and the seed. Both are stored as JSON under
``cache_dir()/derived/<kind>/<key>.json``, where the key is a SHA-256 of
everything the result depends on: the texts and packages themselves (not a
path or an mtime), the parameters, the scikit-learn version for k-means, and
:data:`CACHE_VERSION`. A changed corpus is therefore a miss, never a stale hit.

Writes are atomic (temp file + rename), so concurrent trials and crashes never
leave a half-written entry; an unreadable or inconsistent entry counts as a
miss and is overwritten. A cache that cannot be written (read-only home, full
disk) only costs the recomputation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.federated.partition import (
    DEFAULT_TOPICS,
    Partition,
    make_partition,
    needs_topic_labels,
    topic_labels,
)

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when labelling or partitioning rules change: invalidates entries


def texts_digest(texts: Sequence[str]) -> str:
    """SHA-256 of a sequence of strings, order- and boundary-sensitive."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def content_key(payload: dict[str, Any]) -> str:
    """The cache key of a JSON-serialisable description of a computation."""
    text = json.dumps({"cache_version": CACHE_VERSION, **payload}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


class DiskCache:
    """JSON values by (kind, key) under one root directory."""

    def __init__(self, *, root: Path) -> None:
        self.root = root

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.json"

    def get(self, kind: str, key: str) -> Any | None:
        """The stored value, or ``None`` when absent or unreadable."""
        path = self.path(kind, key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cache entry %s: %s", path, exc)
            return None

    def put(self, kind: str, key: str, value: Any) -> None:
        """Store ``value`` atomically; a failure to write is logged, not raised."""
        path = self.path(kind, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}-", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(value, fh, separators=(",", ":"))
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as exc:
            log.warning("could not write cache entry %s: %s", path, exc)


def default_cache() -> DiskCache:
    """The cache under the scalefed cache directory (``$SCALEFED_CACHE`` etc.)."""
    from trainer.models import cache_dir

    return DiskCache(root=cache_dir() / "derived")


def _sklearn_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scikit-learn")
    except PackageNotFoundError:  # pragma: no cover - sklearn is a dependency
        return "unknown"


def cached_topic_labels(texts: Sequence[str], *, n_topics: int = DEFAULT_TOPICS, seed: int = 0,
                        cache: DiskCache | None = None) -> list[int]:
    """:func:`topic_labels`, looked up by the texts' content before it is computed."""
    cache = default_cache() if cache is None else cache
    key = content_key({"kind": "topic_labels", "texts": texts_digest(texts),
                       "n_topics": n_topics, "seed": seed, "sklearn": _sklearn_version()})
    hit = cache.get("topic_labels", key)
    if isinstance(hit, list) and len(hit) == len(texts):
        return [int(x) for x in hit]
    labels = [int(x) for x in topic_labels(texts, n_topics=n_topics, seed=seed)]
    cache.put("topic_labels", key, labels)
    return labels


def _partition_from(value: Any, n: int) -> Partition | None:
    try:
        part = Partition(method=str(value["method"]),
                         clients=tuple(tuple(int(i) for i in c) for c in value["clients"]),
                         labels=tuple(int(x) for x in value["labels"]),
                         label_names=tuple(str(x) for x in value["label_names"]))
    except (KeyError, TypeError, ValueError):
        return None
    covered = sorted(i for c in part.clients for i in c)
    return part if len(part.labels) == n and covered == list(range(n)) else None


def _partition_value(part: Partition) -> dict[str, Any]:
    return {"method": part.method, "clients": [list(c) for c in part.clients],
            "labels": list(part.labels), "label_names": list(part.label_names)}


def cached_partition(*, texts: Sequence[str], packages: Sequence[str], distribution: str,
                     clients: int, alpha: float = 0.5, seed: int = 0, min_size: int = 1,
                     label_source: str = "topic", n_topics: int = DEFAULT_TOPICS,
                     cache: DiskCache | None = None) -> Partition:
    """:func:`make_partition` (same arguments), looked up by content before it is computed.

    Topic labels are computed (or read from the cache) only where the
    partition needs them: never for ``iid``.
    """
    cache = default_cache() if cache is None else cache
    topics = needs_topic_labels(distribution, label_source)
    key = content_key({
        "kind": "partition", "n": len(texts), "packages": texts_digest(packages),
        "texts": texts_digest(texts) if topics else None,
        "sklearn": _sklearn_version() if topics else None, "distribution": distribution,
        "clients": clients, "alpha": alpha, "seed": seed, "min_size": min_size,
        "label_source": label_source, "n_topics": n_topics})
    hit = _partition_from(cache.get("partition", key), len(texts))
    if hit is not None:
        return hit
    labels = (cached_topic_labels(texts, n_topics=n_topics, seed=seed, cache=cache)
              if topics else None)
    part = make_partition(texts=texts, packages=packages, distribution=distribution,
                          clients=clients, alpha=alpha, seed=seed, min_size=min_size,
                          label_source=label_source, n_topics=n_topics, topics=labels)
    cache.put("partition", key, _partition_value(part))
    return part
