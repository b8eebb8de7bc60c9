"""The real offline model. Marked slow: ~1-3 minutes on 2 cores, not in the default run."""

from __future__ import annotations

import pytest

from trainer.evaluation.evaluator import EvalConfig, evaluate_model
from trainer.models import load_model

pytestmark = pytest.mark.slow


def test_smollm2_loads_from_the_gguf_cache_and_scores_a_problem() -> None:
    loaded = load_model("smollm2-135m")
    params = sum(p.numel() for p in loaded.model.parameters())
    assert 134_000_000 < params < 135_000_000
    assert loaded.model.config.num_hidden_layers == 30
    report = evaluate_model(loaded.model, loaded.tokenizer,
                            config=EvalConfig(problems="HumanEval/23,HumanEval/28", n=6,
                                              ks=(1, 6), max_new_tokens=96))
    # strlen and concatenate: SmolLM2 solved each in 5 of 10 samples on the 40-problem eval.
    assert sum(report.correct) >= 2
    assert all(s.completion.startswith("\n") or s.completion.startswith(" ")
               for s in report.samples)
