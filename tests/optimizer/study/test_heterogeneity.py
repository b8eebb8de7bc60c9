"""Heterogeneity h of a split: computed from the partition alone, stored with every trial."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from optimizer.science.synthetic import optimum_at
from optimizer.study.backends import InProcessBackend, SyntheticBackend
from optimizer.study.heterogeneity import (
    HETEROGENEITY_ATTR,
    corpus_heterogeneity,
    heterogeneity_of_record,
    synthetic_heterogeneity,
    synthetic_partition,
)
from optimizer.study.manager import completed_trials, run_study
from tests.optimizer.conftest import small_study
from trainer.contract import TrialResult, TrialSpec
from trainer.federated.corpus import load_corpus, select_examples
from trainer.federated.partition import make_partition


def _h(kind: str, alpha: float = 0.5, seed: int = 0) -> float:
    return synthetic_heterogeneity({"distribution": kind, "alpha": alpha, "clients": 10,
                                    "partition_seed": seed})


def test_synthetic_h_orders_the_splits_and_is_seeded() -> None:
    iid, d01, d1, natural = _h("iid"), _h("dirichlet", 0.1), _h("dirichlet", 1.0), _h("natural")
    assert iid < 0.25
    assert d01 > d1 > 0.25
    assert natural > d1
    assert _h("dirichlet", 0.1, seed=3) == _h("dirichlet", 0.1, seed=3)
    assert _h("dirichlet", 0.1, seed=3) != _h("dirichlet", 0.1, seed=4)  # a new split
    part = synthetic_partition({"distribution": "dirichlet", "alpha": 0.1, "clients": 10})
    assert sorted(i for c in part.clients for i in c) == list(range(len(part.labels)))
    assert heterogeneity_of_record(part.to_record()) == pytest.approx(d01)


def test_synthetic_backend_reports_h_and_places_the_optimum_by_it() -> None:
    params = {**TrialSpec(distribution="dirichlet", alpha=0.1).to_dict(),
              "scaling_factor": 1.0, "participation": 0.5}
    result = SyntheticBackend().run(params)
    h = _h("dirichlet", 0.1)
    assert result.heterogeneity == pytest.approx(h)
    assert result.record["true_optimum"] == pytest.approx(list(optimum_at(h)))


def test_every_synthetic_trial_stores_its_h(tmp_path: Path) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/h.db", n_trials=4, startup=4,
                      distributions=[{"kind": "iid"}, {"kind": "dirichlet", "alpha": 0.1}])
    run_study(cfg, [SyntheticBackend()], resume=False)
    for label, expected in (("iid", _h("iid")), ("dirichlet-0.1", _h("dirichlet", 0.1))):
        trials = completed_trials(cfg, label)
        assert len(trials) == 4
        assert all(t.user_attrs[HETEROGENEITY_ATTR] == pytest.approx(expected) for t in trials)


def _real_like(spec: TrialSpec, **_: Any) -> TrialResult:
    """A trial function whose record carries a real partition, as run_trial's does."""
    texts = [f"def f{i}(): return {i % 4}" for i in range(40)]
    packages = [f"p{i % 4}" for i in range(40)]
    part = make_partition(texts=texts, packages=packages, distribution="natural", clients=4)
    return TrialResult(pass_at_1=0.1, pass_at_k=0.2, k=10, stderr=0.05, stderr_at_1=0.02, n=10,
                       problems=("HumanEval/0", "HumanEval/1"), correct=(1, 2), timings={},
                       record={"training": {"partition": part.to_record()}})


def test_a_real_trial_record_gives_its_h() -> None:
    result = InProcessBackend(_real_like).run(TrialSpec().to_dict())
    assert result.heterogeneity == pytest.approx(0.75)  # 4 clients, one package each
    assert heterogeneity_of_record({"fake": True}) is None


def test_corpus_h_is_the_trainers_split_without_training(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEFED_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "data.jsonl"
    rows = [{"instruction": f"Write f{i}", "output": f"def f{i}(): return {i}",
             "lang": f"pkg{i % 5}"} for i in range(60)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    corpus = f"{path}#prompt=instruction,completion=output,label=lang"
    params = {"corpus": corpus, "max_examples": 50, "clients": 5, "batch_size": 1,
              "partition_seed": 0}
    pool = select_examples(load_corpus(corpus), 50)
    natural = make_partition(texts=[e.prompt for e in pool], packages=[e.package for e in pool],
                             distribution="natural", clients=5)
    assert corpus_heterogeneity({**params, "distribution": "natural"}) == \
        pytest.approx(natural.heterogeneity)
    assert corpus_heterogeneity({**params, "distribution": "iid"}) < natural.heterogeneity
