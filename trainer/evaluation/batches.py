"""The rows the batched sampler decodes together, for each sampling engine.

Both kinds hold the same bookkeeping (pending logits, which sample each row is,
its tokens and text, whether it is still live) and differ in how keys and values
are kept: :class:`ReferenceBatch` is the previous path (transformers'
``DynamicCache``, every row holding its own copy of its prompt);
:class:`PrefixBatch` keeps each prompt once (``trainer.evaluation.prefixcache``).
Rows that finish keep their places in the cache until half the batch is done
or new prompts join (compacting copies every layer's cache), but only live rows
run through the model's Linear layers, so a finished row costs only its share of
attention.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trainer.evaluation.draws import sample_stream
from trainer.evaluation.prefixcache import (
    SharedPrefixCache,
    decode_step,
    left_padded_positions,
    model_device,
    prefill,
)


@dataclass
class _Rows:
    # Pending next-token logits of the live rows, in row order; None once sampled
    # (``advance`` computes the next ones, for the rows still live).
    logits: torch.Tensor | None
    owner: list[tuple[int, int]]  # (prompt index, sample index) of each row
    ids: list[list[int]]
    texts: list[str]
    live: list[bool]
    streams: list[random.Random]  # each row's own uniforms (trainer.evaluation.draws)

    def live_rows(self) -> list[int]:
        return [i for i, alive in enumerate(self.live) if alive]

    def _keep_live_rows(self) -> list[int]:
        """Drop the finished rows' bookkeeping; returns the kept (live) rows' old indices.
        Pending logits are the live rows' already, so they stay as they are."""
        keep = self.live_rows()
        self.owner = [self.owner[i] for i in keep]
        self.streams = [self.streams[i] for i in keep]
        self.ids = [self.ids[i] for i in keep]
        self.texts = [self.texts[i] for i in keep]
        self.live = [True] * len(keep)
        return keep

    def _append_rows(self, other: _Rows) -> None:
        if self.logits is None or other.logits is None:
            raise ValueError("rows join only while both batches' logits are pending")
        self.logits = torch.cat([self.logits, other.logits], dim=0)
        self.owner += other.owner
        self.streams += other.streams
        self.ids += other.ids
        self.texts += other.texts
        self.live += other.live


def _fresh_rows(logits: torch.Tensor, first: int, prompts: Sequence[str], n: int,
                seed: int) -> dict[str, Any]:
    rows = len(prompts) * n
    return {"logits": logits,
            "owner": [(first + p, s) for p in range(len(prompts)) for s in range(n)],
            "streams": [sample_stream(seed, text, s) for text in prompts for s in range(n)],
            "ids": [[] for _ in range(rows)], "texts": ["" for _ in range(rows)],
            "live": [True] * rows}


@dataclass
class ReferenceBatch(_Rows):
    """The previous path: the prompt cache repeated n times and grown by concatenation."""

    cache: Any
    mask: torch.Tensor

    def drop_finished(self) -> None:
        """Compact the batch to its live rows."""
        idx = torch.tensor(self._keep_live_rows(), device=self.mask.device)
        self.cache.batch_select_indices(idx)
        self.mask = self.mask[idx]

    def absorb(self, other: ReferenceBatch | PrefixBatch) -> None:
        """Append another batch's rows, left-padding the shorter cache so positions line up."""
        import torch.nn.functional as F

        assert isinstance(other, ReferenceBatch)

        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            for name in ("keys", "values"):
                a, b = getattr(mine, name), getattr(theirs, name)
                a = F.pad(a, (0, 0, width - a.shape[-2], 0))
                b = F.pad(b, (0, 0, width - b.shape[-2], 0))
                setattr(mine, name, torch.cat([a, b], dim=0))
        self.mask = torch.cat([F.pad(self.mask, (width - self.mask.shape[1], 0)),
                               F.pad(other.mask, (width - other.mask.shape[1], 0))], dim=0)
        self._append_rows(other)

    def advance(self, model: Any, tokens: torch.Tensor, rows: torch.Tensor | None) -> None:
        """Feed the live rows (``rows``, or all if None) their sampled tokens; the next
        logits of those rows become the pending ones. Finished rows are fed token 0."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], 1)
        positions = self.mask.sum(-1, keepdim=True) - 1
        if rows is not None:
            tokens = tokens.new_zeros(len(self.live)).index_copy_(0, rows, tokens)
        out = model(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=positions,
                    cache=self.cache, use_cache=True)
        logits = out.logits[:, -1, :]
        self.cache, self.logits = out.cache, logits if rows is None else logits[rows]


@dataclass
class PrefixBatch(_Rows):
    """Each prompt's keys and values stored once; each row keeps only its own suffix."""

    cache: SharedPrefixCache
    positions: torch.Tensor  # [B]: position of the token each row feeds next
    head: Callable[[torch.Tensor], torch.Tensor] | None  # decode steps' LM head (engine.py)

    def drop_finished(self) -> None:
        """Compact the batch to its live rows."""
        idx = torch.tensor(self._keep_live_rows(), device=self.positions.device)
        self.cache.select(idx)
        self.positions = self.positions[idx]

    def absorb(self, other: ReferenceBatch | PrefixBatch) -> None:
        """Append a freshly prefilled batch's groups and rows."""
        assert isinstance(other, PrefixBatch)
        if other.cache.width:
            raise ValueError("only a fresh batch (nothing decoded yet) can be absorbed")
        for group in other.cache.groups:
            self.cache.add_group(group.keys, group.values, group.valid, group.n)
        self.positions = torch.cat([self.positions, other.positions])
        self._append_rows(other)

    def advance(self, model: Any, tokens: torch.Tensor, rows: torch.Tensor | None) -> None:
        """Feed the live rows (``rows``, or all if None) their sampled tokens; only they
        run through the model's Linear layers, finished rows just keep their places."""
        self.logits = decode_step(model, tokens, self.positions, self.cache, self.head, rows=rows)
        self.positions = self.positions + 1


def prefill_batch(model: Any, tokenizer: Any, prompts: Sequence[str], *, first: int, n: int,
                  engine: str, seed: int,
                  head: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  ) -> ReferenceBatch | PrefixBatch:
    """Run the prompts once (left-padded) and return their n rows each, ready to decode;
    each row's random stream comes from (``seed``, its prompt, its sample index)."""
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left")
    device = model_device(model)
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    with torch.inference_mode():
        if engine != "reference":
            cache = SharedPrefixCache(num_layers=model.config.num_hidden_layers, device=device)
            logits = prefill(model, ids, mask, cache, n)
            return PrefixBatch(cache=cache, positions=mask.sum(-1).repeat_interleave(n), head=head,
                               **_fresh_rows(logits, first, prompts, n, seed))
        from transformers import DynamicCache

        out = model(input_ids=ids, attention_mask=mask,
                    position_ids=left_padded_positions(mask),
                    cache=DynamicCache(), use_cache=True, logits_to_keep=1)
    cache = out.cache
    if n > 1:
        cache.batch_repeat_interleave(n)
    return ReferenceBatch(cache=cache, mask=mask.repeat_interleave(n, dim=0),
                          **_fresh_rows(out.logits[:, -1, :].repeat_interleave(n, dim=0),
                                        first, prompts, n, seed))
