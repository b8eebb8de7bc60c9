"""Batched sampling across problems with per-sequence early stop.

A plain ``model.generate`` per problem keeps decoding every row until the
slowest of its n samples stops, and runs at a batch size (n) where CPU decoding
is memory-bound. Here one batch holds several problems' samples; each prompt is
prefilled once, and its keys and values are stored once for its n rows
(``trainer.evaluation.prefixcache``; the ``reference`` engine repeats them n
times, as before); a row stops the step it
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
from trainer.evaluation.draws import next_uniforms, sample_tokens
from trainer.evaluation.engine import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_ENGINE,
    check_engine,
    decode_head,
    sampling_model,
)
from trainer.evaluation.humaneval import STOP_SEQUENCES, has_stopped

if TYPE_CHECKING:
    import torch

    from trainer.evaluation.batches import PrefixBatch, ReferenceBatch

    Batch = ReferenceBatch | PrefixBatch


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """How completions are sampled."""

    n: int = field(default=10, metadata={"help": "samples per prompt"})
    temperature: float = field(default=0.8, metadata={"help": "0 means greedy"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling mass"})
    max_new_tokens: int = field(default=200, metadata={"help": "cap on generated tokens per sample"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    batch_rows: int = field(default=DEFAULT_BATCH_ROWS, metadata={
        "help": "rows (samples) decoded together: a speed setting, the samples do not change"})
    engine: str = field(default=DEFAULT_ENGINE, metadata={
        "help": "prefix (shared-prefix KV cache, in the model's dtype; fp32 is its former "
                "name), int8 (merged int8 copy; fails pass@10 parity, for measurement only) "
                "or reference (the previous DynamicCache path)"})

    def __post_init__(self) -> None:
        check_engine(self.engine)


@dataclass(frozen=True, kw_only=True)
class GenerationStats:
    tokens: int  # generated tokens kept (up to and including the stopping token)
    seconds: float
    # Row-steps run through the model's Linear layers: live rows only since finished rows
    # skip them, so this now equals ``tokens``.
    forward_rows: int


@dataclass
class _Decoder:
    """Continuous batching: prompts join as earlier ones finish, so the batch stays full."""

    model: Any
    tokenizer: Any
    prompts: Sequence[str]
    cfg: SamplingConfig
    stops: Sequence[str]
    on_row_done: Callable[[], None]
    head: Callable[[torch.Tensor], torch.Tensor] | None
    results: list[list[str]]
    tokens: int = 0
    forward_rows: int = 0
    next_prompt: int = 0

    def _refill(self, batch: Batch | None) -> Batch | None:
        live = 0 if batch is None else sum(batch.live)
        room = (self.cfg.batch_rows - live) // self.cfg.n
        # Refill in bulk (at half capacity) so the cache is merged rarely.
        if self.next_prompt >= len(self.prompts) or (batch is not None and live > self.cfg.batch_rows // 2):
            return batch
        take = max(1, room) if live == 0 else room
        if take < 1:
            return batch
        from trainer.evaluation.batches import prefill_batch

        first = self.next_prompt
        chunk = self.prompts[first:first + take]
        self.next_prompt += len(chunk)
        fresh = prefill_batch(self.model, self.tokenizer, chunk, first=first, n=self.cfg.n,
                              engine=self.cfg.engine, seed=self.cfg.seed, head=self.head)
        if batch is None:
            return fresh
        batch.drop_finished()
        batch.absorb(fresh)
        return batch

    def _consume(self, batch: Batch, rows: list[int], tokens: list[int]) -> None:
        eos = self.tokenizer.eos_token_id
        for i, tok in zip(rows, tokens, strict=True):
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

        batch: Batch | None = None
        while True:
            if cancel is not None and cancel.is_set():
                raise TrialCancelledError("generation cancelled")
            batch = self._refill(batch)
            if batch is None:
                return
            rows = batch.live_rows()
            assert batch.logits is not None and batch.logits.shape[0] == len(rows)
            u = next_uniforms([batch.streams[i] for i in rows]).to(batch.logits.device)
            sampled = sample_tokens(batch.logits, u, temperature=self.cfg.temperature,
                                    top_p=self.cfg.top_p)
            batch.logits = None
            self.forward_rows += len(rows)
            self._consume(batch, rows, sampled.tolist())
            alive = [j for j, i in enumerate(rows) if batch.live[i]]  # among the sampled rows
            if not alive:
                batch = None
                continue
            dev = sampled.device
            tokens = (sampled if len(alive) == len(rows)
                      else sampled[torch.tensor(alive, device=dev)])
            live = None  # all rows
            finished = len(batch.live) - len(alive)
            # Finished rows skip the Linear layers but still cost attention and cache
            # memory; compacting copies every layer's cache, so it waits for half.
            if finished >= max(1, len(batch.live) // 2):
                batch.drop_finished()
            elif finished:
                live = torch.tensor([rows[j] for j in alive], device=dev)
            with torch.inference_mode():
                batch.advance(self.model, tokens, live)


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
    finish (continuous batching). Sample j of a prompt draws its tokens from its own
    stream, seeded by (``config.seed``, the prompt, j), so it does not depend on
    ``batch_rows``, the order of ``prompts`` or which other prompts are sampled with it.
    """
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

    decoder = _Decoder(model=sampling_model(model, config.engine), tokenizer=tokenizer,
                       prompts=[prompts[i] for i in order], cfg=config, stops=stops,
                       on_row_done=row_done, head=decode_head(model, config.engine),
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
