"""Heterogeneity ``h`` of a client split: a statistic of the partition alone, before training.

``h`` is the mean total-variation distance between each client's label mix and the
global mix (``trainer.federated.partition.mean_tv_distance``), in [0, 1]: near 0 for an
iid split, larger the more each client's data is skewed. Every trial stores the ``h``
of the split it trained on (user attribute :data:`HETEROGENEITY_ATTR`), which lets one
surrogate over (s, p, h) learn from every distribution of a study family
(``optimizer.study.shared``).

Where ``h`` comes from:

* a real trial: the partition record the trainer returns (``training.partition``);
* the synthetic trainer: the project's own partitioner run on a fixed synthetic label
  set (:func:`synthetic_partition`), so ``h`` is computed from a real split, as for
  real trials, and the synthetic optimum is a function of it;
* a distribution never run (:func:`split_heterogeneity`): the same split computed
  without training, from the synthetic label set or from the corpus (torch-free).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from trainer.federated.partition import Partition, make_partition

HETEROGENEITY_ATTR = "heterogeneity"
# The fixed synthetic data set: examples, topic labels, and source packages. Packages
# nest inside topics (as modules of one library share a topic), unevenly sized.
SYNTHETIC_EXAMPLES = 2000
SYNTHETIC_TOPICS = 10
SYNTHETIC_PACKAGES = 40
SYNTHETIC_SOURCE = "synthetic"
CORPUS_SOURCE = "corpus"


def synthetic_labels() -> tuple[list[int], list[str]]:
    """(topic label, package name) per example of the fixed synthetic data set."""
    rng = np.random.default_rng(20240611)  # fixed: the data set never changes
    package_topic = np.arange(SYNTHETIC_PACKAGES) % SYNTHETIC_TOPICS
    weights = rng.dirichlet(np.full(SYNTHETIC_PACKAGES, 4.0))
    packages = rng.choice(SYNTHETIC_PACKAGES, size=SYNTHETIC_EXAMPLES, p=weights)
    topics = [int(package_topic[p]) for p in packages]
    return topics, [f"pkg{int(p):02d}" for p in packages]


def synthetic_partition(params: Mapping[str, Any]) -> Partition:
    """The partition a trial with ``params`` would get on the synthetic data set.

    Uses the trial's own distribution, alpha, client count and partition seed, and the
    project's partitioner, so ``h`` moves with alpha exactly as it does on real data.
    """
    topics, packages = synthetic_labels()
    kind = str(params.get("distribution", "iid"))
    return make_partition(texts=[""] * len(topics), packages=packages, distribution=kind,
                          clients=int(params.get("clients", 10)),
                          alpha=float(params.get("alpha", 0.5)),
                          seed=int(params.get("partition_seed", 0)), topics=topics)


def synthetic_heterogeneity(params: Mapping[str, Any]) -> float:
    """``h`` of :func:`synthetic_partition`."""
    return synthetic_partition(params).heterogeneity


def corpus_heterogeneity(params: Mapping[str, Any]) -> float:
    """``h`` of the split a real trial with ``params`` trains on, computed without training.

    Follows the trainer's data preparation (corpus, example cap, then the cached
    partition with the trainer's minimum client size) but skips tokenisation, which needs the model's
    tokenizer: the few examples a trial drops as too long for ``seq_len`` are kept
    here, so ``h`` may differ from the trial's own in the third decimal.
    """
    from trainer.federated.cache import cached_partition
    from trainer.federated.corpus import example_text, load_corpus, select_examples

    # A study's trials hold out nothing (``run_trial``), so every kept example is split.
    pool = select_examples(load_corpus(str(params.get("corpus", "stdlib"))),
                           int(params.get("max_examples", 2000)))
    part = cached_partition(texts=[example_text(ex) for ex in pool],
                            packages=[ex.package for ex in pool],
                            distribution=str(params.get("distribution", "iid")),
                            clients=int(params.get("clients", 10)),
                            alpha=float(params.get("alpha", 0.5)),
                            seed=int(params.get("partition_seed", 0)),
                            min_size=int(params.get("batch_size", 4)))
    return part.heterogeneity


def split_heterogeneity(params: Mapping[str, Any], *, source: str) -> float:
    """``h`` of the split ``params`` describe: ``source`` is ``synthetic`` or ``corpus``."""
    if source == SYNTHETIC_SOURCE:
        return synthetic_heterogeneity(params)
    return corpus_heterogeneity(params)


def heterogeneity_of_record(record: Mapping[str, Any]) -> float | None:
    """The ``h`` a run record reports, or None: a real trial's ``training.partition``,
    the synthetic trainer's ``partition``, or a partition record itself."""
    training = record.get("training")
    for holder in (training.get("partition") if isinstance(training, Mapping) else None,
                   record.get("partition"), record):
        if isinstance(holder, Mapping) and "heterogeneity_mean_tv" in holder:
            return float(holder["heterogeneity_mean_tv"])
    return None
