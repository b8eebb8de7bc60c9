"""Client-side pieces of federated training: tokenised examples, batches, local steps.

Examples are tokenised once per run. The prompt is the signature + docstring
with its trailing whitespace cut off (the evaluator strips it too, see
SPEC); the cut whitespace, the body and EOS form the completion, and only
completion tokens carry loss.

A local step's batch is built one of two ways (``BATCHINGS``); both hold the
same examples and give the same loss, the mean over the batch's real target
tokens:

* ``packed`` (the default): the examples concatenated into one row with no
  padding at all. ``position_ids`` restart at 0 for each example, from which
  transformers builds a block-diagonal causal mask, so no token attends across
  an example boundary (``use_cache=False`` is required for that: with a cache
  the position ids are not read as packing). Logits are computed only at the
  positions that carry loss (``logits_to_keep``), which skips the LM head on
  prompt tokens (~42% of stdlib tokens, with a 49k-word head).
* ``padded``: the previous loop, kept as the baseline of
  ``tests/benchmarks/bench_training.py``: rows right-padded to the batch's
  longest example and the model's own loss over full logits. On stdlib
  batches of 4 only ~58% of the padded positions are real tokens.

Why packing: the linear layers, most of a step, then see only real tokens
(SmolLM2, quickstart shape, 2 cores: 1.76x tokens/s per step, see the
benchmark). The row's attention is masked rather than skipped, so it costs
(total length)^2 instead of the sum of squared lengths, a few percent of a
step at these lengths. Bucketing by length was not an option (it changes
which examples share a step), and one forward per example, also padding-free,
was slower than the padded batch (0.74x in a paired run on a loaded machine):
its matmuls are too thin for the CPU kernels.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from trainer.errors import TrialCancelledError

if TYPE_CHECKING:
    import torch

    from trainer.federated.corpus import Example

MIN_COMPLETION_TOKENS = 8


@dataclass(frozen=True, kw_only=True)
class TokenizedExample:
    """Token ids of prompt + completion; the first ``prompt_len`` ids carry no loss."""

    ids: tuple[int, ...]
    prompt_len: int


def split_prompt(example: Example) -> tuple[str, str]:
    """(prompt without trailing whitespace, the whitespace + body)."""
    head = example.prompt.rstrip()
    return head, example.prompt[len(head):] + example.completion


def tokenize_examples(examples: Sequence[Example], tokenizer: Any,
                      seq_len: int) -> list[TokenizedExample | None]:
    """Tokenise aligned with ``examples``; ``None`` where truncation to ``seq_len``
    would leave too little body to learn from."""
    heads, tails = zip(*(split_prompt(ex) for ex in examples)) if examples else ((), ())
    head_ids = tokenizer(list(heads))["input_ids"]
    tail_ids = tokenizer(list(tails), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    out: list[TokenizedExample | None] = []
    for h, t in zip(head_ids, tail_ids):
        full_tail = list(t) + ([eos] if eos is not None else [])
        ids = (list(h) + full_tail)[:seq_len]
        kept = len(ids) - len(h)
        if kept < min(MIN_COMPLETION_TOKENS, len(full_tail)) or kept <= 0:
            out.append(None)
        else:
            out.append(TokenizedExample(ids=tuple(ids), prompt_len=len(h)))
    return out


def collate(batch: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the batch's longest example; labels -100 on prompt and padding."""
    import torch

    width = max(len(ex.ids) for ex in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, ex in enumerate(batch):
        n = len(ex.ids)
        ids = torch.tensor(ex.ids, dtype=torch.long)
        input_ids[row, :n] = ids
        attention[row, :n] = 1
        labels[row, ex.prompt_len:n] = ids[ex.prompt_len:]
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


BATCHINGS = ("packed", "padded")


@dataclass(frozen=True, kw_only=True)
class PackedBatch:
    """A step's examples as one unpadded row (see the module docstring).

    ``keep`` holds the positions whose next token carries loss and
    ``targets`` those next tokens, so the loss is a plain mean of the
    cross-entropy over ``targets``.
    """

    input_ids: torch.Tensor  # (1, total tokens)
    position_ids: torch.Tensor  # (1, total tokens), restarting at 0 per example
    keep: torch.Tensor  # (targets,) positions whose logits are computed
    targets: torch.Tensor  # (targets,) the token expected after each kept position
    tokens: int  # real tokens in the row (all of them: there is no padding)


Batch: TypeAlias = "dict[str, torch.Tensor] | PackedBatch"


def pack(batch: Sequence[TokenizedExample]) -> PackedBatch:
    """Concatenate ``batch`` into one row; the targets are each example's own completion."""
    import torch

    ids: list[int] = []
    positions: list[int] = []
    keep: list[int] = []
    targets: list[int] = []
    for ex in batch:
        start, n = len(ids), len(ex.ids)
        ids.extend(ex.ids)
        positions.extend(range(n))
        # position t predicts token t + 1 of the same example; completion tokens only
        first = max(ex.prompt_len - 1, 0)
        keep.extend(range(start + first, start + n - 1))
        targets.extend(ex.ids[first + 1:n])
    return PackedBatch(input_ids=torch.tensor([ids], dtype=torch.long),
                       position_ids=torch.tensor([positions], dtype=torch.long),
                       keep=torch.tensor(keep, dtype=torch.long),
                       targets=torch.tensor(targets, dtype=torch.long), tokens=len(ids))


def make_batch(batch: Sequence[TokenizedExample], *, batching: str, pad_id: int) -> Batch:
    """The model input of one local step, ``packed`` or ``padded`` (:data:`BATCHINGS`)."""
    if batching == "packed":
        return pack(batch)
    if batching == "padded":
        return collate(batch, pad_id)
    raise ValueError(f"unknown batching {batching!r}; accepted: {', '.join(BATCHINGS)}")


def batch_tokens(batch: Batch) -> int:
    """Real (non-padding) tokens in a batch."""
    if isinstance(batch, PackedBatch):
        return batch.tokens
    return int(batch["attention_mask"].sum())


def batch_loss(model: Any, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy over the batch's target tokens, with the graph for backward."""
    import torch.nn.functional as F

    device = next(model.parameters()).device  # batches are built on the CPU
    if not isinstance(batch, PackedBatch):
        return model(**{k: v.to(device) for k, v in batch.items()}).loss
    from trainer.federated.packedattn import packed_attention_on

    # use_cache=False: with a cache, transformers does not read position_ids as packing
    # and every token would attend to the examples before it in the row.
    with packed_attention_on(model):  # per-example causal attention, no masked blocks
        logits = model(input_ids=batch.input_ids.to(device),
                       position_ids=batch.position_ids.to(device),
                       logits_to_keep=batch.keep.to(device), use_cache=False).logits[0]
    # The loss is float32 whatever the weights' dtype (bf16 logits are upcast first).
    return F.cross_entropy(logits.float(), batch.targets.to(device))


class ClientSampler:
    """Batches of one client's examples: seeded shuffles, one full pass before any repeat.

    State carries across rounds, so a client returning in a later round picks
    up where its last epoch stopped.
    """

    def __init__(self, indices: Sequence[int], *, seed: int, client: int) -> None:
        if not indices:
            raise ValueError(f"client {client} has no examples")
        self._indices = np.asarray(indices, dtype=np.int64)
        self._rng = np.random.default_rng([seed, 2, client])
        self._queue: list[int] = []

    def batch(self, size: int) -> list[int]:
        out: list[int] = []
        while len(out) < size:
            if not self._queue:
                self._queue = [int(i) for i in self._rng.permutation(self._indices)]
            out.append(self._queue.pop())
        return out


@dataclass(frozen=True, kw_only=True)
class LocalResult:
    """One client's local training: mean LM loss over its steps and tokens seen."""

    loss: float
    tokens: int
    steps: int


def _proximal(params: Mapping[str, torch.Tensor], anchor: Mapping[str, torch.Tensor],
              mu: float) -> torch.Tensor:
    return (mu / 2.0) * sum((p - anchor[n]).pow(2).sum() for n, p in params.items())  # type: ignore[return-value]


def local_train(model: Any, params: Mapping[str, torch.nn.Parameter],
                batches: Sequence[Batch], *, learning_rate: float,
                fedprox_mu: float = 0.0, anchor: Mapping[str, torch.Tensor] | None = None,
                cancel: threading.Event | None = None) -> LocalResult:
    """Run one optimizer step per batch on ``params`` (the adapter), fresh AdamW state.

    With ``fedprox_mu > 0`` the loss adds ``mu/2 * ||theta - anchor||^2`` (FedProx);
    the reported loss is the language-model loss alone.
    """
    import torch

    optimizer = torch.optim.AdamW(list(params.values()), lr=learning_rate, weight_decay=0.0)
    model.train()
    total_loss = 0.0
    tokens = 0
    for batch in batches:
        if cancel is not None and cancel.is_set():
            raise TrialCancelledError("cancelled during local training")
        loss = batch_loss(model, batch)
        objective = loss
        if fedprox_mu > 0 and anchor is not None:
            objective = loss + _proximal(params, anchor, fedprox_mu)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        total_loss += float(loss.detach())
        tokens += batch_tokens(batch)
    return LocalResult(loss=total_loss / max(len(batches), 1), tokens=tokens, steps=len(batches))


def mean_loss(model: Any, examples: Sequence[TokenizedExample], *, batch_size: int = 8) -> float:
    """Mean per-token body loss over ``examples`` (the held-out intermediate score)."""
    import torch

    model.eval()
    total = 0.0
    count = 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = pack(examples[start:start + batch_size])
            n = len(batch.targets)
            total += float(batch_loss(model, batch)) * n
            count += n
    return total / max(count, 1)
