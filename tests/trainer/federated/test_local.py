"""Packed local steps: same targets, same loss and same gradients as the padded batch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from trainer.contract import TrialSpec
from trainer.federated.local import (
    TokenizedExample,
    batch_loss,
    batch_tokens,
    collate,
    local_train,
    make_batch,
    mean_loss,
    pack,
)
from trainer.federated.rounds import attach_lora
from trainer.models import LoadedModel, load_model

# Unequal lengths and prompt lengths, so padding and boundaries both matter.
EXAMPLES = [
    TokenizedExample(ids=tuple(range(100, 140)), prompt_len=12),
    TokenizedExample(ids=tuple(range(300, 309)), prompt_len=3),
    TokenizedExample(ids=tuple(range(500, 527)), prompt_len=1),
    TokenizedExample(ids=tuple(range(700, 718)), prompt_len=17),
]


@pytest.fixture(scope="module")
def peft_model() -> Iterator[torch.nn.Module]:
    loaded: LoadedModel = load_model("tiny-random")
    spec = TrialSpec(model="tiny-random", lora_rank=4, lora_alpha=8, seed=0)
    model = attach_lora(loaded.model, spec)
    with torch.no_grad():  # LoRA B starts at zero: make the adapter matter to the loss
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    model.train()
    yield model
    model.unload()


def _lora(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def test_pack_targets_are_the_padded_labels_shifted() -> None:
    packed = pack(EXAMPLES)
    padded = collate(EXAMPLES, pad_id=0)
    assert packed.tokens == batch_tokens(padded) == sum(len(e.ids) for e in EXAMPLES)
    assert packed.input_ids.shape == (1, packed.tokens)
    # HF's loss predicts labels[:, 1:] from logits[:, :-1]; gather the same pairs per row
    expected = [int(t) for row in padded["labels"][:, 1:] for t in row if t != -100]
    assert packed.targets.tolist() == expected
    row = packed.input_ids[0]
    assert all(int(row[k + 1]) == int(t) for k, t in zip(packed.keep, packed.targets)
               if k + 1 < packed.tokens)
    # positions restart per example; the last token of an example never predicts the next
    starts = [0, 40, 49, 76]
    assert [int(packed.position_ids[0, s]) for s in starts] == [0, 0, 0, 0]
    assert not {int(k) for k in packed.keep} & {s - 1 for s in starts[1:]}


def _loss_and_grads(model: torch.nn.Module, batching: str) -> tuple[float,
                                                                     dict[str, torch.Tensor]]:
    params = _lora(model)
    model.zero_grad(set_to_none=True)
    loss = batch_loss(model, make_batch(EXAMPLES, batching=batching, pad_id=0))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in params.items() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


def test_packed_loss_and_gradients_equal_the_padded_batch(peft_model: torch.nn.Module) -> None:
    padded_loss, padded_grads = _loss_and_grads(peft_model, "padded")
    packed_loss, packed_grads = _loss_and_grads(peft_model, "packed")
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5, abs=1e-6)
    assert padded_grads.keys() == packed_grads.keys() == _lora(peft_model).keys()
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6)


def test_packed_examples_do_not_see_each_other(peft_model: torch.nn.Module) -> None:
    # each example alone (batch of one, no padding) scores what it scores inside the pack
    with torch.no_grad():
        row = peft_model(input_ids=pack(EXAMPLES).input_ids,
                         position_ids=pack(EXAMPLES).position_ids, use_cache=False).logits[0]
        start = 0
        for ex in EXAMPLES:
            alone = peft_model(input_ids=torch.tensor([ex.ids]), use_cache=False).logits[0]
            torch.testing.assert_close(row[start:start + len(ex.ids)], alone,
                                       rtol=1e-4, atol=1e-5)
            start += len(ex.ids)


def test_local_train_same_steps_either_way(peft_model: torch.nn.Module) -> None:
    params = _lora(peft_model)
    start = {n: p.detach().clone() for n, p in params.items()}
    results = {}
    for batching in ("padded", "packed"):
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(start[n])
        batches = [make_batch(EXAMPLES[:3], batching=batching, pad_id=0),
                   make_batch(EXAMPLES[1:], batching=batching, pad_id=0)]
        result = local_train(peft_model, params, batches, learning_rate=1e-2)
        results[batching] = (result, {n: p.detach().clone() for n, p in params.items()})
    (padded, padded_state), (packed, packed_state) = results["padded"], results["packed"]
    assert padded.tokens == packed.tokens and padded.steps == packed.steps == 2
    assert packed.loss == pytest.approx(padded.loss, rel=1e-5)
    for name, value in padded_state.items():
        assert not torch.equal(value, start[name])
        torch.testing.assert_close(packed_state[name], value, rtol=1e-4, atol=1e-6)


def test_held_out_mean_loss_is_the_token_weighted_padded_loss(peft_model: torch.nn.Module,
                                                               ) -> None:
    with torch.no_grad():
        chunks = [collate(EXAMPLES[:3], pad_id=0), collate(EXAMPLES[3:], pad_id=0)]
        sums = [float(peft_model(**c).loss) * int((c["labels"][:, 1:] != -100).sum())
                for c in chunks]
    counts = [int((c["labels"][:, 1:] != -100).sum()) for c in chunks]
    expected = sum(sums) / sum(counts)
    assert mean_loss(peft_model, EXAMPLES, batch_size=3) == pytest.approx(expected, rel=1e-5)
    peft_model.train()


def test_unknown_batching_is_refused() -> None:
    with pytest.raises(ValueError, match="packed, padded"):
        make_batch(EXAMPLES, batching="bucketed", pad_id=0)
