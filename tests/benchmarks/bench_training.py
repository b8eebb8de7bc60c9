"""Benchmark: training tokens/s, bf16 against fp32 and against the previous release (goal >= 3x).

By default three sides (:mod:`tests.benchmarks.sides`) train the same federated
rounds on SmolLM2 in fresh processes, alternating: ``previous`` (the last
release's code, its default packed loop in fp32), ``fp32`` and ``bf16`` (this
tree, ``dtype`` float32 and bfloat16). Every side runs the same steps on the
same examples, so tokens/s compare directly and the round losses are a
loss-curve parity check (bf16 against fp32 on the same batches).

    python tests/benchmarks/bench_training.py --repeats 2        # sides, SmolLM2
    python tests/benchmarks/bench_training.py --packing --model smollm2-135m --rounds 1 --repeats 1

``--packing`` runs the previous release's comparison instead, in this process:

Both sides run ``train_federated`` on the quickstart profile's batch shape
(10 clients, p = 0.5, 1 local step, batch 4, seq_len 256, LoRA r = 8 on
q/v, 2,000 stdlib examples), one after the other in the same process, on the
same examples per step (the runs record them and must agree), with the same
thread count:

* ``padded`` (baseline): the previous loop, rows padded to the batch's
  longest example, logits over every position;
* ``packed`` (default): one unpadded row per step, logits only where the loss
  is taken (:mod:`trainer.federated.local`).

Tokens are real (unpadded) tokens, the same count on both sides. The order
alternates between repeats and each side keeps its best run, because the
machine may be shared. Also printed: the train-loss agreement of the two
loops; a paired measurement in a plain torch loop, padded and packed
alternating step by step on the same batches, whose per-step ratio is the
least disturbed by other processes (a third side there, ``packed-masked``, is a
packed row through transformers' block-diagonal masked SDPA instead of
per-example attention, :mod:`trainer.federated.packedattn`); the cost of partitioning with and without
the content cache; and (``--overhead``) federation's overhead over a plain
torch loop on the same packed batches.

    python tests/benchmarks/bench_training.py --model tiny-random
    python tests/benchmarks/bench_training.py --model smollm2-135m --rounds 1 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from unittest.mock import patch

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trainer.contract import TrialSpec
from trainer.federated import packedattn
from trainer.federated.cache import DiskCache, cached_partition
from trainer.federated.corpus import example_text, load_corpus, select_examples
from trainer.federated.local import batch_loss, make_batch, tokenize_examples
from trainer.federated.partition import make_partition
from trainer.federated.rounds import attach_lora, train_federated
from trainer.models import LoadedModel, load_model
from trainer.threads import configure_threads


def _spec(args: argparse.Namespace) -> TrialSpec:
    return TrialSpec(model=args.model, clients=args.clients, participation=args.participation,
                     budget_mode="rounds", rounds=args.rounds, local_steps=1,
                     batch_size=args.batch_size, seq_len=args.seq_len, lora_rank=8,
                     lora_targets="q_proj,v_proj", max_examples=args.max_examples,
                     learning_rate=1e-3, scaling_factor=1.0, seed=0)


def _federated(loaded: LoadedModel, spec: TrialSpec, examples: Any, batching: str,
               ) -> tuple[float, int, list[list[int]], list[float]]:
    run = train_federated(loaded=loaded, spec=spec, examples=examples, progress=False,
                          record_batches=True, batching=batching)
    run.release()
    assert run.batches is not None
    return run.timings["train_s"], run.tokens, run.batches, [e.train_loss for e in run.events]


@contextmanager
def _masked_attention() -> Iterator[None]:
    """Packed rows through transformers' block-diagonal masked SDPA (before sdpa_packed)."""
    @contextmanager
    def unchanged(model: Any) -> Iterator[None]:
        yield

    with patch.object(packedattn, "packed_attention_on", unchanged):
        yield


def _plain_steps(loaded: LoadedModel, spec: TrialSpec, train: list[Any],
                 batches: list[list[int]], sides: tuple[str, ...]) -> dict[str, list[float]]:
    """Seconds of each recorded step per side in a plain torch loop (no adapter exchange,
    no aggregation), the sides alternating step by step so that both see the same load."""
    model = attach_lora(loaded.model, spec)
    try:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=0.0)
        pad = int(loaded.tokenizer.pad_token_id or 0)
        model.train()
        times: dict[str, list[float]] = {side: [] for side in sides}
        for step, idx in enumerate(batches):
            for side in sides if step % 2 == 0 else sides[::-1]:
                start = time.perf_counter()
                batching, _, variant = side.partition("-")
                batch = make_batch([train[i] for i in idx], batching=batching, pad_id=pad)
                with _masked_attention() if variant == "masked" else nullcontext():
                    loss = batch_loss(model, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                times[side].append(time.perf_counter() - start)
        return times
    finally:
        model.unload()


def _partition_costs(examples: Any, spec: TrialSpec) -> str:
    """Seconds to partition the pool under dirichlet(0.1): uncached, cold cache, warm cache."""
    args: dict[str, Any] = {
        "texts": [example_text(ex) for ex in examples],
        "packages": [ex.package for ex in examples], "distribution": "dirichlet",
        "clients": spec.clients, "alpha": 0.1, "seed": 0, "min_size": spec.batch_size}
    times = []
    make_partition(**args)  # warm-up: imports, thread pools
    with tempfile.TemporaryDirectory() as tmp:
        cache = DiskCache(root=Path(tmp))
        for fn in (lambda: make_partition(**args), lambda: cached_partition(**args, cache=cache),
                   lambda: cached_partition(**args, cache=cache)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return (f"dirichlet(0.1) partition of {len(examples)} examples: uncached {times[0]:.2f} s, "
            f"cold cache {times[1]:.2f} s, warm cache {times[2]:.3f} s")


def _measure(loaded: LoadedModel, spec: TrialSpec, examples: Any, repeats: int,
             ) -> tuple[dict[str, list[float]], int, list[list[int]], dict[str, list[float]]]:
    seconds: dict[str, list[float]] = {"padded": [], "packed": []}
    losses: dict[str, list[float]] = {}
    one_step = spec.replace(rounds=1, participation=1 / spec.clients)
    for side in ("padded", "packed"):  # warm-up: one step each
        _federated(loaded, one_step, examples, side)
    reference: tuple[int, list[list[int]]] | None = None
    for rep in range(repeats):  # alternate the order, keep the best: the box is shared
        for side in ("padded", "packed") if rep % 2 == 0 else ("packed", "padded"):
            took, tokens, batches, losses[side] = _federated(loaded, spec, examples, side)
            reference = reference or (tokens, batches)
            assert (tokens, batches) == reference, side  # the same steps on both sides
            seconds[side].append(round(took, 2))
    assert reference is not None
    return seconds, reference[0], reference[1], losses


def _ratios(baseline: list[float], new: list[float]) -> str:
    ratios = sorted(a / b for a, b in zip(baseline, new, strict=True))
    return (f"median {ratios[len(ratios) // 2]:.2f}x [min {ratios[0]:.2f}, "
            f"max {ratios[-1]:.2f}]")


def _sides(args: argparse.Namespace) -> None:
    from tests.benchmarks.sides import SIDES, host_header, median, order, run_side

    print(host_header(), flush=True)
    payload = ["--model", args.model, "--rounds", str(args.rounds), "--batch-size",
               str(args.batch_size), "--seq-len", str(args.seq_len)]
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for repeat in range(args.repeats):
        for side in order(repeat, SIDES):
            out = run_side(side, "training", payload)
            runs[side].append(out)
            print(f"  repeat {repeat + 1} {side:<8} {out['tokens'] / out['train_s']:8.1f} tok/s "
                  f"({out['train_s']:.1f} s, {out['steps']} steps, {out['tokens']} tokens)",
                  flush=True)
    rate = {side: median([r["tokens"] / r["train_s"] for r in runs[side]]) for side in SIDES}
    first = runs["fp32"][0]
    print(f"{args.model}: {first['steps']} packed steps of batch {args.batch_size} "
          f"(seq_len {args.seq_len}), {first['tokens']} tokens; median of {args.repeats}")
    for side in SIDES:
        print(f"{side:<8} {rate[side]:8.1f} tok/s")
    print(f"bf16 vs fp32 (same code): {rate['bf16'] / rate['fp32']:.2f}x (goal >= 3x); "
          f"bf16 vs previous release: {rate['bf16'] / rate['previous']:.2f}x; "
          f"fp32 vs previous: {rate['fp32'] / rate['previous']:.2f}x")
    fp32, bf16, prev = (runs[s][0]["losses"] for s in ("fp32", "bf16", "previous"))
    worst = max(abs(b - a) / a for a, b in zip(fp32, bf16, strict=True))
    same = max(abs(b - a) / a for a, b in zip(prev, fp32, strict=True))
    print(f"round train losses: fp32 {[round(x, 4) for x in fp32]}, bf16 "
          f"{[round(x, 4) for x in bf16]}: bf16 within {worst:.2%} of fp32 (previous vs "
          f"fp32: {same:.1e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packing", action="store_true",
                        help="padded vs packed loops in this process (the previous benchmark)")
    parser.add_argument("--model", default=None, choices=["tiny-random", "smollm2-135m"],
                        help="default: smollm2-135m (sides), tiny-random (--packing)")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--participation", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--max-examples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--overhead", action="store_true",
                        help="also time a plain torch loop on the same packed batches")
    args = parser.parse_args()
    if not args.packing:
        args.model = args.model or "smollm2-135m"
        _sides(args)
        return
    args.model = args.model or "tiny-random"
    print(f"torch threads: {configure_threads()}; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    loaded = load_model(args.model)
    spec = _spec(args)
    examples = select_examples(load_corpus(spec.corpus), spec.max_examples)
    seconds, tokens, batches, losses = _measure(loaded, spec, examples, args.repeats)
    old, new = min(seconds["padded"]), min(seconds["packed"])
    drift = max(abs(a - b) / abs(b) for a, b in zip(losses["packed"], losses["padded"]))
    print(f"model {args.model}: {len(batches)} steps of batch {spec.batch_size} "
          f"(seq_len {spec.seq_len}), {tokens} real tokens, {spec.clients} clients x "
          f"p={spec.participation}, {spec.rounds} rounds, LoRA r={spec.lora_rank} q/v")
    print(f"padded (old loop): {tokens / old:9.1f} tok/s  ({old:.2f} s; runs {seconds['padded']})")
    print(f"packed (new loop): {tokens / new:9.1f} tok/s  ({new:.2f} s; runs {seconds['packed']})")
    print(f"speed-up         : {old / new:.2f}x training tokens/s (goal >= 1.3x); "
          f"round train losses agree to {drift:.1e} relative")
    train = [t for t in tokenize_examples(examples, loaded.tokenizer, spec.seq_len) if t]
    paired = _plain_steps(loaded, spec, train, batches, ("padded", "packed", "packed-masked"))
    print(f"paired steps     : padded {tokens / sum(paired['padded']):.1f} tok/s, packed "
          f"{tokens / sum(paired['packed']):.1f} tok/s; per-step ratio "
          f"{_ratios(paired['padded'], paired['packed'])} "
          "(plain loop, sides alternating step by step)")
    print(f"attention        : packed rows with per-example attention against the masked row "
          f"({tokens / sum(paired['packed-masked']):.1f} tok/s): per-step ratio "
          f"{_ratios(paired['packed-masked'], paired['packed'])}")
    if args.overhead:
        plain = sum(_plain_steps(loaded, spec, train, batches, ("packed",))["packed"])
        print(f"plain torch loop : {tokens / plain:9.1f} tok/s; federation overhead "
              f"{100 * (new / plain - 1):+.2f} % (goal <= 5 %)")
    print(_partition_costs(examples, spec))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
