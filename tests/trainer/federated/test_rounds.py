"""Federated loop on the tiny-random model: budget math, participation, locality, determinism."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import trainer.federated.cache as cache_mod
from trainer.contract import RoundEvent, TrialSpec
from trainer.errors import ConfigError, TrialCancelledError
from trainer.federated.corpus import Example
from trainer.federated.local import collate, local_train, tokenize_examples
from trainer.federated.rounds import (
    attach_lora,
    participants_per_round,
    planned_rounds,
    train_federated,
)
from trainer.models import LoadedModel, load_model

BASE: dict[str, object] = {
    "model": "tiny-random", "clients": 4, "participation": 0.5, "budget_mode": "rounds",
    "rounds": 2, "local_steps": 2, "batch_size": 2, "seq_len": 48, "max_examples": 64,
    "learning_rate": 1e-2, "lora_rank": 4, "lora_alpha": 8,
}


def _examples(n: int = 48) -> list[Example]:
    return [Example(prompt=f'def fn{i}(x):\n    """Return x {"plus" if i % 2 else "times"} {i}."""\n',
                    completion=f"    y = x {'+' if i % 2 else '*'} {i}\n    return y\n",
                    name=f"fn{i}", module=f"pkg{i % 6}.mod", package=f"pkg{i % 6}")
            for i in range(n)]


@pytest.fixture(scope="module")
def loaded() -> Iterator[LoadedModel]:
    yield load_model("tiny-random")


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Partitions cached under the test's own directory, never the user's cache."""
    monkeypatch.setattr(cache_mod, "default_cache", lambda: cache_mod.DiskCache(root=tmp_path))
    return tmp_path


def _spec(**changes: object) -> TrialSpec:
    return TrialSpec(**{**BASE, **changes})  # type: ignore[arg-type]


def test_participants_and_budget_math() -> None:
    assert participants_per_round(10, 0.5) == 5
    assert participants_per_round(10, 0.25) == 3  # halves round up
    assert participants_per_round(10, 0.01) == 1  # at least one client
    assert participants_per_round(3, 1.0) == 3
    spec = TrialSpec(clients=10, participation=0.5, budget_mode="client_steps",
                     client_steps=40, local_steps=2)
    assert planned_rounds(spec) == 4  # 40 // (5 * 2)
    assert planned_rounds(spec.replace(participation=0.2)) == 10  # 40 // (2 * 2)
    assert planned_rounds(spec.replace(participation=1.0, client_steps=7)) == 1
    assert planned_rounds(spec.replace(budget_mode="rounds", rounds=6)) == 6


def test_local_step_changes_adapter_only(loaded: LoadedModel) -> None:
    spec = _spec()
    model = attach_lora(loaded.model, spec)
    try:
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        assert params and all("lora_" in n for n in params)
        toks = [t for t in tokenize_examples(_examples(4), loaded.tokenizer, 48) if t]
        assert toks[0] is not None and toks[0].prompt_len < len(toks[0].ids)
        batch = collate(toks, loaded.tokenizer.pad_token_id)
        assert (batch["labels"][0, :toks[0].prompt_len] == -100).all()
        # two steps: LoRA B starts at zero, so A's gradient is zero on the first one
        result = local_train(model, params, [batch, batch], learning_rate=1e-2)
        assert result.steps == 2 and result.tokens == int(batch["attention_mask"].sum()) * 2
        for name, p in model.named_parameters():
            if name in params:
                assert not torch.equal(p, before[name]), name
            else:
                assert torch.equal(p, before[name]), name  # base weights bit-identical
    finally:
        model.unload()
    assert not hasattr(loaded.model, "peft_config")


def _final(loaded: LoadedModel, spec: TrialSpec, **options: object,
           ) -> tuple[dict[str, torch.Tensor], list[RoundEvent]]:
    events: list[RoundEvent] = []
    run = train_federated(loaded=loaded, spec=spec, examples=_examples(), on_event=events.append,
                          progress=False, min_client_size=2, **options)  # type: ignore[arg-type]
    state = {k: v.clone() for k, v in run.adapter_state.items()}
    # the model holds the global adapter after the last round
    live = {n: p for n, p in run.model.named_parameters() if p.requires_grad}
    assert all(torch.equal(live[n], state[n]) for n in state)
    run.release()
    return state, events


def test_same_seed_same_adapters_and_participation(loaded: LoadedModel) -> None:
    spec = _spec(budget_mode="client_steps", client_steps=12, participation=0.75)
    first, events = _final(loaded, spec)
    assert len(events) == planned_rounds(spec) == 2  # 12 // (3 * 2)
    for i, event in enumerate(events, start=1):
        assert event.round == i and event.total_rounds == 2
        assert len(event.clients) == len(set(event.clients)) == 3
        assert all(0 <= c < 4 for c in event.clients)
        assert event.update_norm > 0 and event.train_loss > 0
    again, _ = _final(loaded, spec)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    other, _ = _final(loaded, spec.replace(seed=1))
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_run_record_holdout_and_fedprox(loaded: LoadedModel) -> None:
    spec = _spec(rounds=1, fedprox_mu=0.5, distribution="natural", clients=3)
    run = train_federated(loaded=loaded, spec=spec, examples=_examples(), holdout=6,
                          progress=False, record_batches=True)
    try:
        record = run.to_record()
        assert record["examples"] == 42 and record["holdout"] == 6
        assert record["batching"] == "packed"
        assert record["partition"]["method"] == "natural"
        assert record["per_round"][0]["intermediate"] is not None
        assert run.local_steps_total == 2 * 2 and run.batches is not None
        assert len(run.batches) == run.local_steps_total
        assert run.tokens > 0
    finally:
        run.release()


def test_cancel_and_bad_targets_restore_the_model(loaded: LoadedModel) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TrialCancelledError):
        train_federated(loaded=loaded, spec=_spec(), examples=_examples(), cancel=cancel,
                        progress=False, min_client_size=2)
    assert not hasattr(loaded.model, "peft_config")
    with pytest.raises(ConfigError) as info:
        train_federated(loaded=loaded, spec=_spec(lora_targets="nope_proj"),
                        examples=_examples(), progress=False, min_client_size=2)
    assert info.value.field == "lora_targets" and "q_proj" in str(info.value)
    assert not hasattr(loaded.model, "peft_config")


def test_packed_and_padded_runs_train_the_same_adapter(loaded: LoadedModel,
                                                       private_cache: Path) -> None:
    spec = _spec(distribution="dirichlet", alpha=0.5, rounds=2)
    packed, packed_events = _final(loaded, spec)
    padded, padded_events = _final(loaded, spec, batching="padded", cache_partition=False)
    assert [e.clients for e in packed_events] == [e.clients for e in padded_events]
    for name, value in padded.items():
        torch.testing.assert_close(packed[name], value, rtol=1e-4, atol=1e-6)
    for a, b in zip(packed_events, padded_events):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
    # the first run stored its partition and topic labels; the uncached one matched them
    assert len(list(private_cache.glob("partition/*.json"))) == 1
    assert len(list(private_cache.glob("topic_labels/*.json"))) == 1
    with pytest.raises(ValueError, match="packed, padded"):
        train_federated(loaded=loaded, spec=spec, examples=_examples(), batching="bucketed")


def test_bf16_training_tracks_the_fp32_loss_curve() -> None:
    """The same federated run with bf16 base weights (fp32 adapter, optimizer state and
    loss) and with fp32 weights: the adapter stays fp32, the base stays bf16, and the
    held-out loss curve of bf16 follows fp32's. Bound: every round's held-out loss within
    0.5% of fp32's, and the loss the training removes (first round to last) within 5% of
    fp32's. bf16 rounds each weight to 8 significant bits (relative error <= 2^-9), which
    moves this model's logits by about 1% (tests/trainer/evaluation/test_engine.py), but a
    loss averages those errors over every target token: measured here, 0.02% per round
    and 0.2% of the drop, so the bounds leave a 20x margin for summation-order noise.
    The training signal itself (the adapter's gradients and updates) is fp32."""
    spec = _spec(rounds=4, learning_rate=3e-2, dtype="bfloat16")
    curves = {}
    for dtype in ("float32", "bfloat16"):
        model = load_model("tiny-random", dtype=dtype)
        run = train_federated(loaded=model, spec=spec, examples=_examples(), holdout=8,
                              progress=False)
        curves[dtype] = [e.intermediate for e in run.events]
        trainable = {p.dtype for p in run.model.parameters() if p.requires_grad}
        frozen = {p.dtype for p in run.model.parameters() if not p.requires_grad}
        assert trainable == {torch.float32}
        assert frozen == {getattr(torch, dtype)}
        assert {t.dtype for t in run.adapter_state.values()} == {torch.float32}
        run.release()
    fp32, bf16 = curves["float32"], curves["bfloat16"]
    assert all(a is not None and b is not None for a, b in zip(fp32, bf16, strict=True))
    for a, b in zip(fp32, bf16, strict=True):
        assert abs(b - a) <= 0.005 * a, (fp32, bf16)
    drop32, drop16 = fp32[0] - fp32[-1], bf16[0] - bf16[-1]
    assert drop32 > 0.05, fp32  # the run trains: the bound below is not vacuous
    assert abs(drop16 - drop32) <= 0.05 * drop32, (fp32, bf16)
