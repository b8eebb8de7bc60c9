"""Per-example attention on packed rows equals transformers' masked SDPA, and leaves the
model's attention setting as it found it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from trainer.federated import packedattn
from trainer.federated.local import TokenizedExample, batch_loss, pack
from trainer.models import LoadedModel, load_model

EXAMPLES = [
    TokenizedExample(ids=tuple(range(100, 140)), prompt_len=12),
    TokenizedExample(ids=tuple(range(300, 309)), prompt_len=3),
    TokenizedExample(ids=tuple(range(500, 527)), prompt_len=1),
]


@pytest.fixture(scope="module")
def model() -> Iterator[Any]:
    loaded: LoadedModel = load_model("tiny-random")
    assert loaded.model.config._attn_implementation == "sdpa"
    yield loaded.model


def test_segment_bounds_finds_each_example_of_one_packed_row() -> None:
    row = pack(EXAMPLES).position_ids
    assert packedattn.segment_bounds(row, 76) == [(0, 40), (40, 49), (49, 76)]
    # not one packed row: one example, a batch of rows, a length mismatch, no positions
    assert packedattn.segment_bounds(torch.arange(9)[None], 9) is None
    assert packedattn.segment_bounds(row.expand(2, -1), 76) is None
    assert packedattn.segment_bounds(row, 75) is None
    assert packedattn.segment_bounds(None, 76) is None


@contextmanager
def _using(model: Any, implementation: str) -> Iterator[None]:
    """Run ``model`` with the attention ``implementation``, then restore its own."""
    packedattn.register()
    before = model.config._attn_implementation
    model.config._attn_implementation = implementation
    try:
        yield
    finally:
        model.config._attn_implementation = before


def _logits(model: Any, implementation: str) -> torch.Tensor:
    batch = pack(EXAMPLES)
    with _using(model, implementation), torch.no_grad():
        return model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                     use_cache=False).logits[0]


def test_packed_attention_equals_the_block_diagonal_masked_sdpa(model: Any) -> None:
    masked = _logits(model, "sdpa")
    per_example = _logits(model, packedattn.NAME)
    torch.testing.assert_close(per_example, masked, rtol=1e-5, atol=1e-5)
    # and it is not a no-op: full causal attention over the row differs after example one
    with torch.no_grad():
        leaky = model(input_ids=pack(EXAMPLES).input_ids, use_cache=False).logits[0]
    assert not torch.allclose(leaky[40:], masked[40:], atol=1e-3)


def test_gradients_match_the_masked_path(model: Any) -> None:
    grads = {}
    batch = pack(EXAMPLES)
    emb = model.get_input_embeddings().weight
    for implementation in ("sdpa", packedattn.NAME):
        model.zero_grad(set_to_none=True)
        emb.requires_grad_(True)
        try:
            with _using(model, implementation):
                logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                               use_cache=False).logits
            logits.float().square().mean().backward()
            grads[implementation] = emb.grad.clone()
        finally:
            emb.requires_grad_(False)
            model.zero_grad(set_to_none=True)
    torch.testing.assert_close(grads[packedattn.NAME], grads["sdpa"], rtol=1e-4, atol=1e-7)


def test_batch_loss_switches_only_for_the_call(model: Any) -> None:
    seen = []
    real = packedattn.packed_attention

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("position_ids") is not None)
        return real(*args, **kwargs)

    packedattn.register()
    from transformers import AttentionInterface

    AttentionInterface.register(packedattn.NAME, spy)
    try:
        batch_loss(model, pack(EXAMPLES))
    finally:
        AttentionInterface.register(packedattn.NAME, real)
    assert seen and all(seen)  # every layer ran the packed path, with the row's positions
    assert model.config._attn_implementation == "sdpa"


def test_a_model_not_on_sdpa_is_left_alone(model: Any) -> None:
    model.config._attn_implementation = "eager"
    try:
        with packedattn.packed_attention_on(model):
            assert model.config._attn_implementation == "eager"
    finally:
        model.config._attn_implementation = "sdpa"
