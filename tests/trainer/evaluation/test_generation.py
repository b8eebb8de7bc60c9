from __future__ import annotations

import threading

import pytest
import torch

from trainer.errors import TrialCancelledError
from trainer.evaluation.draws import sample_tokens
from trainer.evaluation.generation import SamplingConfig, sample_completions
from trainer.evaluation.humaneval import prepare_prompt, select_problems
from trainer.models import LoadedModel, load_model


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model("tiny-random")


def _prompts(count: int) -> list[str]:
    return [prepare_prompt(p["prompt"]) for p in select_problems(str(count))]


def _hf_greedy(tiny: LoadedModel, prompt: str, max_new_tokens: int) -> list[int]:
    enc = tiny.tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = tiny.model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                  pad_token_id=tiny.tokenizer.pad_token_id)
    return out[0, enc["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("engine", ["fp32", "reference"])
@pytest.mark.parametrize("batch_rows", [8, 2, 1])
def test_greedy_matches_per_prompt_generate_with_padding_and_early_stops(
        tiny: LoadedModel, batch_rows: int, engine: str) -> None:
    """Batched decoding (left padding, shared prefill, rows leaving early, prompts joining
    a running batch) gives exactly what plain per-prompt generate gives, with the shared-prefix
    KV cache as with transformers' own."""
    prompts = _prompts(3)
    steps = 12
    reference = [_hf_greedy(tiny, p, steps) for p in prompts]
    # Make prompt 0's row stop after its 4th token, so rows leave the batch mid-way.
    decoded0 = [tiny.tokenizer.decode([t]) for t in reference[0]]
    stop = "".join(decoded0[:4])[-3:]
    cfg = SamplingConfig(n=1, temperature=0.0, max_new_tokens=steps, batch_rows=batch_rows,
                         engine=engine)
    texts, stats = sample_completions(tiny.model, tiny.tokenizer, prompts, config=cfg, stops=[stop])
    for i, ref in enumerate(reference):
        expected = ""
        for tok in ref:
            expected += tiny.tokenizer.decode([tok])
            if stop in expected:
                break
        assert tiny.tokenizer.decode(tiny.tokenizer(texts[i][0], add_special_tokens=False)
                                     ["input_ids"]) == texts[i][0]
        assert texts[i][0] == expected, i
    # Only live rows are decoded: one row-step per sampled token, and the stopped row's
    # remaining steps are never run (it is dropped, not carried to the length cap).
    assert stats.forward_rows == stats.tokens < len(prompts) * steps


def test_same_seed_same_samples_and_other_seed_differs(tiny: LoadedModel) -> None:
    prompts = _prompts(2)
    cfg = SamplingConfig(n=3, max_new_tokens=6, seed=1, batch_rows=6)
    a, _ = sample_completions(tiny.model, tiny.tokenizer, prompts, config=cfg)
    b, _ = sample_completions(tiny.model, tiny.tokenizer, prompts, config=cfg)
    c, _ = sample_completions(tiny.model, tiny.tokenizer, prompts,
                              config=SamplingConfig(n=3, max_new_tokens=6, seed=2, batch_rows=6))
    assert a == b
    assert a != c
    assert [len(x) for x in a] == [3, 3]


def test_chunking_covers_every_prompt_and_reports_progress(tiny: LoadedModel) -> None:
    seen: list[tuple[int, int]] = []
    texts, stats = sample_completions(
        tiny.model, tiny.tokenizer, _prompts(5),
        config=SamplingConfig(n=2, max_new_tokens=3, batch_rows=4),
        on_progress=lambda d, t: seen.append((d, t)))
    assert len(texts) == 5 and all(len(t) == 2 for t in texts)
    assert seen[-1] == (10, 10)
    assert stats.tokens <= 10 * 3


def test_cancel_stops_generation(tiny: LoadedModel) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TrialCancelledError):
        sample_completions(tiny.model, tiny.tokenizer, _prompts(1),
                           config=SamplingConfig(n=1, max_new_tokens=5), cancel=cancel)


def _brute_nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus distribution by definition: smallest top set with mass >= top_p, renormalised."""
    order = probs.argsort(descending=True)
    keep, mass = [], 0.0
    for i in order.tolist():
        keep.append(i)
        mass += float(probs[i])
        if mass >= top_p:
            break
    out = torch.zeros_like(probs)
    out[keep] = probs[keep]
    return out / out.sum()


@pytest.mark.parametrize("peaked", [True, False])
def test_sampler_matches_nucleus_distribution(peaked: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    vocab = 600
    logits = torch.randn(vocab, generator=gen) * (6.0 if peaked else 0.1)
    rows = logits.expand(20000, vocab)
    u = torch.rand(20000, generator=gen, dtype=torch.float64)
    draws = sample_tokens(rows, u, temperature=0.8, top_p=0.9)
    expected = _brute_nucleus(torch.softmax(logits / 0.8, -1), 0.9)
    freq = torch.bincount(draws, minlength=vocab).float() / len(draws)
    assert bool((freq[expected == 0] == 0).all())  # never outside the nucleus
    assert float((freq - expected).abs().sum()) < (0.05 if peaked else 0.5)


def test_inverse_cdf_picks_by_cumulative_mass_at_the_edges() -> None:
    """u below the first token's mass picks it; u just under 1 picks the nucleus's last
    token, never one outside it; top_p = 1 samples the whole vocabulary in id order."""
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    pick = [int(sample_tokens(logits, torch.tensor([u], dtype=torch.float64), temperature=1.0,
                              top_p=0.9)) for u in (0.0, 0.49, 0.7, 0.99999999)]
    # nucleus {0, 1, 2} renormalised: cdf 0.526, 0.842, 1.0
    assert pick == [0, 0, 1, 2]
    full = [int(sample_tokens(logits, torch.tensor([u], dtype=torch.float64), temperature=1.0,
                              top_p=1.0)) for u in (0.49, 0.51, 0.96, 0.999999)]
    assert full == [0, 1, 3, 3]


def test_a_sample_does_not_depend_on_batch_size_order_or_subset(tiny: LoadedModel) -> None:
    """Each sample draws from its own stream (seed, prompt, index): the batch size, the
    prompts' order and the other prompts sampled alongside do not change it (CRN)."""
    prompts = _prompts(3)
    cfg = SamplingConfig(n=3, max_new_tokens=8, seed=3, temperature=1.0, top_p=1.0)
    whole, _ = sample_completions(tiny.model, tiny.tokenizer, prompts,
                                  config=SamplingConfig(**{**cfg.__dict__, "batch_rows": 9}))
    small, _ = sample_completions(tiny.model, tiny.tokenizer, prompts,
                                  config=SamplingConfig(**{**cfg.__dict__, "batch_rows": 3}))
    subset, _ = sample_completions(tiny.model, tiny.tokenizer, [prompts[2], prompts[0]],
                                   config=SamplingConfig(**{**cfg.__dict__, "batch_rows": 3}))
    assert whole == small
    assert subset == [whole[2], whole[0]]
    assert len({t for row in whole for t in row}) > 3  # the samples do differ from each other
