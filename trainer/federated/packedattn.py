"""Attention for packed training rows: each example attends causally to itself only.

A packed row (:func:`trainer.federated.local.pack`) holds several examples
back to back, with ``position_ids`` restarting at 0 for each. Transformers'
``sdpa`` path gives such a row a block-diagonal causal mask, and SDPA then
computes every query against every key of the row and masks most of them
away: at the quickstart shape (two ~176-token examples in a 352-token row)
attention was 15% of a training step, forward and backward, in a profile of
one trial's training (2 cores).

``sdpa_packed`` runs SDPA once per example with ``is_causal=True`` instead:
no mask is read, the CPU flash kernel skips the blocks above the diagonal, and
no example's queries meet another example's keys. Per example that is the same
arithmetic as the masked row (the masked entries contributed exact zeros), so
the loss matches the ``sdpa`` path to float rounding (see the tests). Inputs
that are not one packed row (a batch of padded rows, a single example, decode
steps with a cache) go to transformers' own ``sdpa`` unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

NAME = "sdpa_packed"
_REGISTERED: list[bool] = []


def segment_bounds(position_ids: torch.Tensor | None, length: int) -> list[tuple[int, int]] | None:
    """The (start, end) of each example of one packed row, or None if it is not one.

    A packed row is a single row whose positions restart at 0 more than once and
    cover exactly the ``length`` query positions.
    """
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[0] != 1:
        return None
    row = position_ids[0]
    if row.shape[0] != length:
        return None
    starts = (row == 0).nonzero().flatten().tolist()
    if len(starts) < 2 or starts[0] != 0:
        return None
    ends = starts[1:] + [length]
    return list(zip(starts, ends, strict=True))


def packed_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, **kwargs: Any,
                     ) -> tuple[torch.Tensor, None]:
    """Transformers attention-interface function: per-example causal SDPA on a packed row."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    length = query.shape[2]
    bounds = (segment_bounds(kwargs.get("position_ids"), length)
              if key.shape[2] == length else None)  # keys beyond the queries: a cache
    if bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k != "is_causal"}
    outputs = [sdpa_attention_forward(module, query[:, :, s:e], key[:, :, s:e],
                                      value[:, :, s:e], None, is_causal=True, **kwargs)[0]
               for s, e in bounds]
    return torch.cat(outputs, dim=1), None  # [batch, seq, heads, head_dim]


def register() -> None:
    """Make ``sdpa_packed`` a known attention implementation (idempotent)."""
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, packed_attention)
    # The mask is still built for inputs that are not one packed row (padded batches).
    AttentionMaskInterface.register(NAME, sdpa_mask)
    _REGISTERED.append(True)


@contextmanager
def packed_attention_on(model: Any) -> Iterator[None]:
    """Train ``model`` with ``sdpa_packed`` when it runs ``sdpa``; restore it afterwards
    (sampling uses its own attention and must find the model as it was)."""
    config = model.config
    before = getattr(config, "_attn_implementation", None)
    if before != "sdpa":
        yield
        return
    register()
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = before
