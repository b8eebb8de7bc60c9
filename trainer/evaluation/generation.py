"""Batched sampling across problems with per-sequence early stop.

A plain ``model.generate`` per problem keeps decoding every row until the
slowest of its n samples stops, and runs at a batch size (n) where CPU decoding
is memory-bound. Here one batch holds several problems' samples; each prompt is
prefilled once and its KV cache repeated n times; a row stops the step it
emits EOS or a stop sequence, finished rows are dropped from the cache in
bulk, and new prompts join the batch as old ones finish (continuous batching),
so the batch stays near ``batch_rows`` rows instead of draining to a few.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainer.errors import TrialCancelledError
from trainer.evaluation.engine import DEFAULT_ENGINE, check_engine, new_cache, sampling_model
from trainer.evaluation.humaneval import STOP_SEQUENCES, has_stopped

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
    engine: str = field(default=DEFAULT_ENGINE, metadata={
        "help": "int8 (merged int8 copy, in-place KV cache), fp32 (in-place KV cache) or "
                "reference (the previous DynamicCache path)"})

    def __post_init__(self) -> None:
        check_engine(self.engine)


@dataclass(frozen=True, kw_only=True)
class GenerationStats:
    tokens: int  # generated tokens kept (up to and including the stopping token)
    seconds: float
    forward_rows: int  # row-steps computed (tokens the model produced, wasted ones included)


_TOP_K = 256  # candidates sorted per row; a full-vocabulary sort costs ~150 ms/step at 80 rows


def _nucleus(probs: torch.Tensor, top_p: float, gen: torch.Generator) -> torch.Tensor:
    """Sample from the smallest set of most likely tokens whose mass reaches top_p."""
    import torch

    sorted_probs, order = probs.sort(dim=-1, descending=True)
    drop = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p  # always keeps >= 1 token
    picked = torch.multinomial(sorted_probs.masked_fill(drop, 0.0), 1, generator=gen)
    return order.gather(-1, picked).squeeze(-1)


def _sample(logits: torch.Tensor, cfg: SamplingConfig, gen: torch.Generator) -> torch.Tensor:
    """Temperature + exact nucleus sampling.

    The nucleus is looked for among the top 256 tokens first; rows whose top-256
    mass falls short of top_p (rare for a trained model) take the full sort, so
    the result is exactly nucleus sampling either way.
    """
    import torch

    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / cfg.temperature, dim=-1)
    if cfg.top_p >= 1.0:
        return torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    k = min(_TOP_K, probs.shape[-1])
    top_probs, top_ids = probs.topk(k, dim=-1)
    short = top_probs.sum(dim=-1) < cfg.top_p
    out = top_ids.gather(-1, _nucleus(top_probs, cfg.top_p, gen)[:, None]).squeeze(-1)
    if bool(short.any()):
        rows = short.nonzero().squeeze(-1)
        out[rows] = _nucleus(probs[rows], cfg.top_p, gen)
    return out


@dataclass
class _Batch:
    """The rows decoding together: their KV cache, attention mask and pending logits.

    Rows that finish stay in the batch as dead weight until a quarter of the
    batch is dead or new prompts join: compacting copies the whole cache, which
    costs more than a few wasted row-steps.
    """

    cache: Any
    mask: torch.Tensor
    logits: torch.Tensor
    owner: list[tuple[int, int]]  # (prompt index, sample index) of each row
    ids: list[list[int]]
    texts: list[str]
    live: list[bool]

    def select(self, keep: list[int]) -> None:
        import torch

        idx = torch.tensor(keep)
        self.cache.batch_select_indices(idx)
        self.mask, self.logits = self.mask[idx], self.logits[idx]
        self.owner = [self.owner[i] for i in keep]
        self.ids = [self.ids[i] for i in keep]
        self.texts = [self.texts[i] for i in keep]
        self.live = [self.live[i] for i in keep]

    def absorb(self, other: _Batch) -> None:
        """Append another batch's rows, left-padding the shorter cache so positions line up."""
        import torch
        import torch.nn.functional as F

        from trainer.evaluation.kvcache import GrowingCache

        width = max(self.mask.shape[1], other.mask.shape[1])
        if isinstance(self.cache, GrowingCache):
            self.cache.stack_left_padded(other.cache)
        else:
            for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
                for name in ("keys", "values"):
                    a, b = getattr(mine, name), getattr(theirs, name)
                    a = F.pad(a, (0, 0, width - a.shape[-2], 0))
                    b = F.pad(b, (0, 0, width - b.shape[-2], 0))
                    setattr(mine, name, torch.cat([a, b], dim=0))
        self.mask = torch.cat([F.pad(self.mask, (width - self.mask.shape[1], 0)),
                               F.pad(other.mask, (width - other.mask.shape[1], 0))], dim=0)
        self.logits = torch.cat([self.logits, other.logits], dim=0)
        self.owner += other.owner
        self.ids += other.ids
        self.texts += other.texts
        self.live += other.live


def _prefill(model: Any, tokenizer: Any, prompts: Sequence[str], first: int, n: int,
             engine: str) -> _Batch:
    """Run the prompts once (left-padded), then repeat cache, mask and logits n times each."""
    import torch

    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left")
    mask = enc["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        out = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions,
                    cache=new_cache(model, engine), use_cache=True, logits_to_keep=1)
    cache = out.cache
    if n > 1:
        cache.batch_repeat_interleave(n)
    rows = len(prompts) * n
    return _Batch(cache=cache, mask=mask.repeat_interleave(n, dim=0),
                  logits=out.logits[:, -1, :].repeat_interleave(n, dim=0),
                  owner=[(first + p, s) for p in range(len(prompts)) for s in range(n)],
                  ids=[[] for _ in range(rows)], texts=["" for _ in range(rows)],
                  live=[True] * rows)


@dataclass
class _Decoder:
    """Continuous batching: prompts join as earlier ones finish, so the batch stays full."""

    model: Any
    tokenizer: Any
    prompts: Sequence[str]
    cfg: SamplingConfig
    stops: Sequence[str]
    gen: torch.Generator
    on_row_done: Callable[[], None]
    results: list[list[str]]
    tokens: int = 0
    forward_rows: int = 0
    next_prompt: int = 0

    def _refill(self, batch: _Batch | None) -> _Batch | None:
        live = 0 if batch is None else sum(batch.live)
        room = (self.cfg.batch_rows - live) // self.cfg.n
        # Refill in bulk (at half capacity) so the cache is merged rarely.
        if self.next_prompt >= len(self.prompts) or (batch is not None and live > self.cfg.batch_rows // 2):
            return batch
        take = max(1, room) if live == 0 else room
        if take < 1:
            return batch
        first = self.next_prompt
        chunk = self.prompts[first:first + take]
        self.next_prompt += len(chunk)
        fresh = _prefill(self.model, self.tokenizer, chunk, first, self.cfg.n, self.cfg.engine)
        if batch is None:
            return fresh
        batch.select([i for i, alive in enumerate(batch.live) if alive])
        batch.absorb(fresh)
        return batch

    def _consume(self, batch: _Batch, next_tokens: torch.Tensor) -> None:
        eos = self.tokenizer.eos_token_id
        for i, tok in enumerate(next_tokens.tolist()):
            if not batch.live[i]:
                continue
            self.tokens += 1
            done = tok == eos
            if not done:
                batch.ids[i].append(tok)
                batch.texts[i] += self.tokenizer.decode([tok])
                done = (has_stopped(batch.texts[i], self.stops)
                        or len(batch.ids[i]) >= self.cfg.max_new_tokens)
            if done:
                batch.live[i] = False
                p, s = batch.owner[i]
                self.results[p][s] = self.tokenizer.decode(batch.ids[i])
                self.on_row_done()

    def run(self, cancel: threading.Event | None) -> None:
        import torch

        batch: _Batch | None = None
        while True:
            if cancel is not None and cancel.is_set():
                raise TrialCancelledError("generation cancelled")
            batch = self._refill(batch)
            if batch is None:
                return
            next_tokens = _sample(batch.logits, self.cfg, self.gen)
            self.forward_rows += len(batch.live)
            self._consume(batch, next_tokens)
            alive = [i for i, a in enumerate(batch.live) if a]
            if not alive:
                batch = None
                continue
            if len(batch.live) - len(alive) >= max(1, len(batch.live) // 4):
                batch.select(alive)
                next_tokens = next_tokens[torch.tensor(alive)]
            batch.mask = torch.cat([batch.mask, batch.mask.new_ones((batch.mask.shape[0], 1))], 1)
            positions = batch.mask.sum(-1, keepdim=True) - 1
            with torch.inference_mode():
                out = self.model(input_ids=next_tokens[:, None], attention_mask=batch.mask,
                                 position_ids=positions, cache=batch.cache, use_cache=True)
            batch.cache, batch.logits = out.cache, out.logits[:, -1, :]


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

    About ``batch_rows`` rows decode together; new prompts join as earlier rows
    finish (continuous batching). Deterministic for a given seed and config.
    """
    import torch

    # Longest prompts first: prompts that join together have similar lengths,
    # so little left padding is computed.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    total = len(prompts) * config.n
    done = 0

    def row_done() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total)

    decoder = _Decoder(model=sampling_model(model, config.engine), tokenizer=tokenizer, prompts=[prompts[i] for i in order],
                       cfg=config, stops=stops, gen=torch.Generator().manual_seed(config.seed),
                       on_row_done=row_done,
                       results=[["" for _ in range(config.n)] for _ in prompts])
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        decoder.run(cancel)
    finally:
        model.train(was_training)
    results: list[list[str]] = [[] for _ in prompts]
    for rank, i in enumerate(order):
        results[i] = decoder.results[rank]
    stats = GenerationStats(tokens=decoder.tokens, seconds=time.perf_counter() - start,
                            forward_rows=decoder.forward_rows)
    return results, stats
