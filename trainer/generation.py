"""Batched sampling across problems with per-sequence early stop.

A plain ``model.generate`` per problem keeps decoding every row until the
slowest of its n samples stops, and runs at a batch size (n) where CPU decoding
is memory-bound. Here one batch holds several problems' samples; each prompt is
prefilled once and its KV cache repeated n times; a row leaves the batch (its
cache rows are dropped) the step it emits EOS or a stop sequence, so no compute
is spent on finished samples.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainer.errors import TrialCancelledError
from trainer.humaneval import STOP_SEQUENCES, has_stopped

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """How completions are sampled."""

    n: int = field(default=10, metadata={"help": "samples per prompt"})
    temperature: float = field(default=0.8, metadata={"help": "0 means greedy"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling mass"})
    max_new_tokens: int = field(default=200, metadata={"help": "cap on generated tokens per sample"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    batch_rows: int = field(default=80, metadata={"help": "rows (samples) decoded together"})


@dataclass(frozen=True, kw_only=True)
class GenerationStats:
    tokens: int  # generated tokens kept (up to and including the stopping token)
    seconds: float
    forward_rows: int  # row-steps computed (tokens the model produced, wasted ones included)


def _sample(logits: torch.Tensor, cfg: SamplingConfig, gen: torch.Generator) -> torch.Tensor:
    import torch

    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / cfg.temperature, dim=-1)
    if cfg.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(dim=-1)
        # keep the smallest prefix whose mass reaches top_p (always >= 1 token)
        drop = cumulative - sorted_probs > cfg.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        picked = torch.multinomial(sorted_probs, 1, generator=gen).squeeze(-1)
        return order.gather(-1, picked[:, None]).squeeze(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


@dataclass
class _Rows:
    """Book-keeping for the rows still decoding."""

    owner: list[tuple[int, int]]  # (prompt index, sample index) of each live row
    ids: list[list[int]]
    texts: list[str]


def _prefill(model: Any, tokenizer: Any, prompts: Sequence[str], n: int) -> tuple[Any, Any, Any]:
    """Run the prompts once (left-padded), then repeat logits/cache/mask n times per prompt."""
    import torch

    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left")
    mask = enc["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.inference_mode():
        out = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions,
                    cache=cache, use_cache=True, logits_to_keep=1)
    cache = out.cache
    if n > 1:
        cache.batch_repeat_interleave(n)
    logits = out.logits[:, -1, :].repeat_interleave(n, dim=0)
    return logits, cache, mask.repeat_interleave(n, dim=0)


def _decode_chunk(model: Any, tokenizer: Any, prompts: Sequence[str], cfg: SamplingConfig,
                  gen: torch.Generator, stops: Sequence[str], on_row_done: Callable[[], None],
                  cancel: threading.Event | None) -> tuple[list[list[str]], int, int]:
    import torch

    logits, cache, mask = _prefill(model, tokenizer, prompts, cfg.n)
    rows = _Rows(owner=[(p, s) for p in range(len(prompts)) for s in range(cfg.n)],
                 ids=[[] for _ in range(len(prompts) * cfg.n)],
                 texts=["" for _ in range(len(prompts) * cfg.n)])
    out: list[list[str]] = [["" for _ in range(cfg.n)] for _ in prompts]
    eos = tokenizer.eos_token_id
    tokens = forward_rows = 0
    for step in range(cfg.max_new_tokens):
        if cancel is not None and cancel.is_set():
            raise TrialCancelledError("generation cancelled")
        next_tokens = _sample(logits, cfg, gen)
        forward_rows += len(rows.owner)
        keep: list[int] = []
        for i, tok in enumerate(next_tokens.tolist()):
            tokens += 1
            done = tok == eos
            if not done:
                rows.ids[i].append(tok)
                rows.texts[i] += tokenizer.decode([tok])
                done = has_stopped(rows.texts[i], stops) or step == cfg.max_new_tokens - 1
            if done:
                p, s = rows.owner[i]
                out[p][s] = tokenizer.decode(rows.ids[i])
                on_row_done()
            else:
                keep.append(i)
        if not keep:
            break
        if len(keep) < len(rows.owner):
            idx = torch.tensor(keep)
            cache.batch_select_indices(idx)
            mask, next_tokens = mask[idx], next_tokens[idx]
            rows = _Rows(owner=[rows.owner[i] for i in keep], ids=[rows.ids[i] for i in keep],
                         texts=[rows.texts[i] for i in keep])
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        positions = mask.sum(-1, keepdim=True) - 1
        with torch.inference_mode():
            step_out = model(input_ids=next_tokens[:, None], attention_mask=mask,
                             position_ids=positions, cache=cache, use_cache=True)
        cache = step_out.cache
        logits = step_out.logits[:, -1, :]
    return out, tokens, forward_rows


def sample_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    config: SamplingConfig = SamplingConfig(),
    stops: Sequence[str] = STOP_SEQUENCES,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[list[list[str]], GenerationStats]:
    """Sample ``config.n`` continuations of every prompt; returns raw generated texts.

    Prompts are grouped (longest first, to keep left padding small) into chunks
    of about ``batch_rows`` rows. Deterministic for a given seed and config.
    """
    import torch

    gen = torch.Generator().manual_seed(config.seed)
    per_chunk = max(1, config.batch_rows // config.n)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: list[list[str]] = [[] for _ in prompts]
    total = len(prompts) * config.n
    done = 0

    def row_done() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total)

    start = time.perf_counter()
    tokens = forward_rows = 0
    was_training = model.training
    model.eval()
    try:
        for c in range(0, len(order), per_chunk):
            chunk = order[c:c + per_chunk]
            texts, t, f = _decode_chunk(model, tokenizer, [prompts[i] for i in chunk], config,
                                        gen, stops, row_done, cancel)
            tokens += t
            forward_rows += f
            for i, samples in zip(chunk, texts, strict=True):
                results[i] = samples
    finally:
        model.train(was_training)
    stats = GenerationStats(tokens=tokens, seconds=time.perf_counter() - start,
                            forward_rows=forward_rows)
    return results, stats
