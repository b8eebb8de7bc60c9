"""The federated loop: partial participation, local LoRA training, scaled server update.

One peft model serves every client: the server keeps the global adapter as a
state dict and copies it into the adapter parameters before each client's
local steps, then reads the client's result back. Only adapter (LoRA)
parameters are ever exchanged; base weights stay frozen and bit-identical.

Budget rule (``budget_mode``):

* ``rounds``: exactly ``spec.rounds`` rounds.
* ``client_steps`` (compute-matched, the study default):
  ``rounds = max(1, client_steps // (participants * local_steps))`` with
  ``participants = participants_per_round(clients, participation)``. The
  rounds are whole, so the steps actually spent,
  ``rounds * participants * local_steps``, never exceed ``client_steps``
  except when even one round costs more (then one round runs).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.contract import RoundEvent, TrialSpec, participants_per_round, planned_rounds
from trainer.errors import ConfigError, TrialCancelledError
from trainer.federated.aggregate import server_update, update_norm
from trainer.federated.cache import cached_partition
from trainer.federated.local import (
    BATCHINGS,
    ClientSampler,
    TokenizedExample,
    local_train,
    make_batch,
    mean_loss,
    tokenize_examples,
)
from trainer.federated.partition import Partition, make_partition

if TYPE_CHECKING:
    import torch

    from trainer.federated.corpus import Example
    from trainer.models import LoadedModel

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class FederatedRun:
    """A finished federated training: the model (adapter attached) and what happened."""

    model: Any = field(metadata={"help": "the peft model; loaded.model carries the adapter too"})
    adapter_state: dict[str, torch.Tensor] = field(metadata={"help": "final global adapter"})
    events: list[RoundEvent] = field(metadata={"help": "one per round"})
    partition: Partition
    participants: int
    rounds: int
    local_steps_total: int
    tokens: int
    examples: int = field(metadata={"help": "training examples after tokenisation"})
    holdout: int = field(metadata={"help": "held-out examples scored each round"})
    timings: dict[str, float]
    batching: str = field(default="packed", metadata={"help": "how local steps were batched"})
    batches: list[list[int]] | None = None  # only with record_batches=True

    def release(self) -> Any:
        """Remove the adapter from the base model (restoring it) and return the base model.

        Call after evaluation when the loaded model is reused for another trial.
        """
        if getattr(self.model, "merged", False):
            self.model.unmerge_adapter()
        return self.model.unload()

    def to_record(self) -> dict[str, Any]:
        """JSON-serialisable summary for the run record."""
        return {
            "rounds": self.rounds, "participants": self.participants,
            "local_steps_total": self.local_steps_total, "tokens": self.tokens,
            "examples": self.examples, "holdout": self.holdout, "batching": self.batching,
            "timings": dict(self.timings), "partition": self.partition.to_record(),
            "per_round": [
                {"round": e.round, "clients": list(e.clients), "train_loss": e.train_loss,
                 "update_norm": e.update_norm, "seconds": e.seconds,
                 "intermediate": e.intermediate} for e in self.events],
        }


@dataclass(kw_only=True)
class _Data:
    train: list[TokenizedExample]
    holdout: list[TokenizedExample]
    partition: Partition


_TOKENIZE_CHUNK = 1_000  # examples tokenised between two looks at the cancel flag


def _prepare_data(spec: TrialSpec, examples: Sequence[Example] | None, tokenizer: Any,
                  *, holdout: int, min_size: int, label_source: str, cache_partition: bool,
                  timings: dict[str, float], cancel: threading.Event | None) -> _Data:
    from trainer.federated.corpus import check_cancel, example_text, load_corpus, select_examples

    start = time.perf_counter()
    if examples is None:
        examples = load_corpus(spec.corpus, cancel=cancel)
    pool = select_examples(examples, spec.max_examples)
    timings["corpus_s"] = time.perf_counter() - start
    start = time.perf_counter()
    tokens: list[TokenizedExample | None] = []
    for at in range(0, len(pool), _TOKENIZE_CHUNK):
        check_cancel(cancel, "tokenisation")
        tokens += tokenize_examples(pool[at:at + _TOKENIZE_CHUNK], tokenizer, spec.seq_len)
    check_cancel(cancel, "data preparation")
    kept = [(ex, tok) for ex, tok in zip(pool, tokens) if tok is not None]
    timings["tokenize_s"] = time.perf_counter() - start
    if len(kept) <= holdout:
        raise ConfigError("max_examples", f"only {len(kept)} usable examples for a hold-out "
                          f"of {holdout}", accepted="a larger corpus or max_examples")
    order = np.random.default_rng([spec.partition_seed, 3]).permutation(len(kept))
    held = sorted(int(i) for i in order[:holdout])
    held_set = set(held)
    train = [kept[i] for i in range(len(kept)) if i not in held_set]
    start = time.perf_counter()
    partition = cached_partition if cache_partition else make_partition
    part = partition(texts=[example_text(ex) for ex, _ in train],
                     packages=[ex.package for ex, _ in train],
                     distribution=spec.distribution, clients=spec.clients, alpha=spec.alpha,
                     seed=spec.partition_seed, min_size=min_size, label_source=label_source)
    timings["partition_s"] = time.perf_counter() - start
    return _Data(train=[t for _, t in train], holdout=[kept[i][1] for i in held], partition=part)


def attach_lora(model: Any, spec: TrialSpec) -> Any:
    """Wrap ``model`` in a LoRA peft model (in place), seeded for a reproducible init."""
    import torch
    from peft import LoraConfig, get_peft_model

    if hasattr(model, "peft_config"):
        raise RuntimeError("the model already carries an adapter; release() the previous run")
    targets = [t.strip() for t in spec.lora_targets.split(",") if t.strip()]
    config = LoraConfig(r=spec.lora_rank, lora_alpha=spec.lora_alpha, target_modules=targets,
                        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    torch.manual_seed(spec.seed)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                        if isinstance(m, torch.nn.Linear)})
        raise ConfigError("lora_targets", str(exc).splitlines()[0],
                          accepted=", ".join(names)) from exc


def _adapter_params(peft_model: Any) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in peft_model.named_parameters() if p.requires_grad}


def _load_state(params: dict[str, torch.nn.Parameter], state: dict[str, torch.Tensor]) -> None:
    import torch

    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name])


@dataclass(kw_only=True)
class _Loop:
    """Mutable state of one federated run (kept off the public API)."""

    spec: TrialSpec
    model: Any
    params: dict[str, torch.nn.Parameter]
    data: _Data
    pad_id: int
    batching: str
    cancel: threading.Event | None
    batches: list[list[int]] | None
    samplers: list[ClientSampler] = field(default_factory=list)
    tokens: int = 0
    steps: int = 0

    def client_round(self, client: int, global_state: dict[str, torch.Tensor],
                     ) -> tuple[dict[str, torch.Tensor], float]:
        spec = self.spec
        _load_state(self.params, global_state)
        batches = []
        for _ in range(spec.local_steps):
            idx = self.samplers[client].batch(spec.batch_size)
            if self.batches is not None:
                self.batches.append(idx)
            batches.append(make_batch([self.data.train[i] for i in idx],
                                      batching=self.batching, pad_id=self.pad_id))
        result = local_train(self.model, self.params, batches, learning_rate=spec.learning_rate,
                             fedprox_mu=spec.fedprox_mu, anchor=global_state, cancel=self.cancel)
        self.tokens += result.tokens
        self.steps += result.steps
        return {n: p.detach().clone() for n, p in self.params.items()}, result.loss

    def round(self, number: int, total: int, chosen: list[int],
              global_state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], RoundEvent]:
        start = time.perf_counter()
        states, losses = [], []
        for client in chosen:
            state, loss = self.client_round(client, global_state)
            states.append(state)
            losses.append(loss)
        counts = [len(self.data.partition.clients[c]) for c in chosen]
        new_state, update = server_update(global_state, states, counts,
                                          scaling_factor=self.spec.scaling_factor)
        _load_state(self.params, new_state)
        score = (mean_loss(self.model, self.data.holdout)
                 if self.data.holdout else None)
        event = RoundEvent(round=number, total_rounds=total, clients=tuple(chosen),
                           train_loss=float(np.mean(losses)), update_norm=update_norm(update),
                           seconds=time.perf_counter() - start, intermediate=score)
        return new_state, event


def _run_rounds(loop: _Loop, total: int, participants: int,
                on_event: Callable[[RoundEvent], None] | None,
                progress: bool | None) -> tuple[dict[str, torch.Tensor], list[RoundEvent]]:
    from tqdm.auto import tqdm

    spec = loop.spec
    selector = np.random.default_rng([spec.seed, 1])
    global_state = {n: p.detach().clone() for n, p in loop.params.items()}
    events: list[RoundEvent] = []
    bar = tqdm(total=total, desc="rounds", unit="round",
               disable=None if progress is None else not progress)
    try:
        for number in range(1, total + 1):
            if loop.cancel is not None and loop.cancel.is_set():
                raise TrialCancelledError(f"cancelled before round {number}")
            chosen = sorted(int(c) for c in selector.choice(spec.clients, participants,
                                                             replace=False))
            global_state, event = loop.round(number, total, chosen, global_state)
            events.append(event)
            bar.update(1)
            bar.set_postfix(loss=f"{event.train_loss:.3f}", norm=f"{event.update_norm:.2e}")
            if on_event is not None:
                on_event(event)
    finally:
        bar.close()
    return global_state, events


def train_federated(*, loaded: LoadedModel, spec: TrialSpec,
                    examples: Sequence[Example] | None = None,
                    on_event: Callable[[RoundEvent], None] | None = None,
                    cancel: threading.Event | None = None, holdout: int = 0,
                    min_client_size: int | None = None, label_source: str = "topic",
                    progress: bool | None = None, record_batches: bool = False,
                    batching: str = "packed", cache_partition: bool = True) -> FederatedRun:
    """Federated LoRA training of ``loaded.model`` as ``spec`` says.

    ``examples`` defaults to ``load_corpus(spec.corpus)``, capped at
    ``spec.max_examples``. ``holdout`` examples are set aside and their body
    loss is each round's ``intermediate`` score (0: no score). Clients must hold
    at least ``min_client_size`` examples (default ``spec.batch_size``).
    The adapter is injected into ``loaded.model`` in place, so after the call
    ``loaded.model`` generates with the trained adapter; ``run.release()``
    removes it again. On error or cancellation the adapter is removed before
    the exception propagates.

    ``batching`` builds each local step's input (see :mod:`trainer.federated.local`):
    ``packed`` (one unpadded row) or ``padded`` (the previous loop, the
    benchmark's baseline); both give the same loss on the same examples.
    ``cache_partition`` reads and stores the partition and its topic labels
    by content (:mod:`trainer.federated.cache`).
    """
    import torch

    if batching not in BATCHINGS:
        raise ValueError(f"unknown batching {batching!r}; accepted: {', '.join(BATCHINGS)}")
    timings: dict[str, float] = {}
    data = _prepare_data(spec, examples, loaded.tokenizer, holdout=holdout,
                         min_size=spec.batch_size if min_client_size is None else min_client_size,
                         label_source=label_source, cache_partition=cache_partition,
                         timings=timings, cancel=cancel)
    if cancel is not None and cancel.is_set():
        raise TrialCancelledError("cancelled after data preparation")
    log.info("partition\n%s", data.partition.table())
    start = time.perf_counter()
    peft_model = attach_lora(loaded.model, spec)
    try:
        params = _adapter_params(peft_model)
        pad_id = loaded.tokenizer.pad_token_id
        loop = _Loop(spec=spec, model=peft_model, params=params, data=data,
                     pad_id=0 if pad_id is None else int(pad_id), batching=batching,
                     cancel=cancel,
                     batches=[] if record_batches else None,
                     samplers=[ClientSampler(c, seed=spec.seed, client=i)
                               for i, c in enumerate(data.partition.clients)])
        total = planned_rounds(spec)
        participants = participants_per_round(spec.clients, spec.participation)
        timings["setup_s"] = time.perf_counter() - start
        start = time.perf_counter()
        torch.manual_seed(spec.seed)
        global_state, events = _run_rounds(loop, total, participants, on_event, progress)
        timings["train_s"] = time.perf_counter() - start
    except BaseException:
        peft_model.unload()  # leave the caller's model as it was
        raise
    peft_model.eval()
    return FederatedRun(model=peft_model, adapter_state=global_state, events=events,
                        partition=data.partition, participants=participants, rounds=total,
                        local_steps_total=loop.steps, tokens=loop.tokens,
                        examples=len(data.train), holdout=len(data.holdout), timings=timings,
                        batching=batching, batches=loop.batches)
