"""Benchmark: federated orchestration overhead vs a plain torch loop (goal <= 5%).

Both sides run the same LoRA model, the same batches (the federated run
records the example indices of every local step, and the plain loop replays
them in order) and the same number of optimizer steps. The federated side
adds what federation costs: copying the global adapter into the model per
client, a fresh optimizer per client, reading client states back, weighted
aggregation with the scaling factor, and the round bookkeeping.

    python tests/benchmarks/bench_training.py --model tiny-random
    python tests/benchmarks/bench_training.py --model smollm2-135m --rounds 2
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from trainer.contract import TrialSpec
from trainer.federated.corpus import load_corpus, select_examples
from trainer.federated.local import collate, tokenize_examples
from trainer.federated.rounds import attach_lora, train_federated
from trainer.models import LoadedModel, load_model


def _spec(args: argparse.Namespace) -> TrialSpec:
    return TrialSpec(model=args.model, clients=args.clients, participation=args.participation,
                     budget_mode="rounds", rounds=args.rounds, local_steps=args.local_steps,
                     batch_size=args.batch_size, seq_len=args.seq_len,
                     max_examples=args.max_examples, scaling_factor=1.5, seed=0)


def _federated(loaded: LoadedModel, spec: TrialSpec, examples: Any) -> tuple[float, int, Any]:
    run = train_federated(loaded=loaded, spec=spec, examples=examples, progress=False,
                          record_batches=True)
    run.release()
    return run.timings["train_s"], run.tokens, run.batches


def _plain(loaded: LoadedModel, spec: TrialSpec, train: list[Any],
           batches: list[list[int]]) -> tuple[float, int]:
    model = attach_lora(loaded.model, spec)
    try:
        params = [p for p in model.parameters() if p.requires_grad]
        pad = loaded.tokenizer.pad_token_id
        start = time.perf_counter()
        optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=0.0)
        model.train()
        tokens = 0
        for idx in batches:
            batch = collate([train[i] for i in idx], pad)
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            tokens += int(batch["attention_mask"].sum())
        return time.perf_counter() - start, tokens
    finally:
        model.unload()


def _orchestration_per_round(loaded: LoadedModel, spec: TrialSpec, repeats: int = 20) -> float:
    """Seconds of pure federation work per round: adapter copies in/out per client and
    the scaled aggregation, measured without any forward/backward in between."""
    from trainer.federated.aggregate import server_update, update_norm
    from trainer.federated.rounds import participants_per_round

    model = attach_lora(loaded.model, spec)
    try:
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        glob = {n: p.detach().clone() for n, p in params.items()}
        m = participants_per_round(spec.clients, spec.participation)
        start = time.perf_counter()
        for _ in range(repeats):
            states = []
            for _ in range(m):
                with torch.no_grad():
                    for n, p in params.items():
                        p.copy_(glob[n])
                torch.optim.AdamW(list(params.values()), lr=spec.learning_rate)
                states.append({n: p.detach().clone() for n, p in params.items()})
            glob, update = server_update(glob, states, [1] * m, scaling_factor=1.5)
            update_norm(update)
        return (time.perf_counter() - start) / repeats
    finally:
        model.unload()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random", choices=["tiny-random", "smollm2-135m"])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--participation", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--local-steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--max-examples", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")

    loaded = load_model(args.model)
    spec = _spec(args)
    examples = select_examples(load_corpus(spec.corpus), spec.max_examples)
    train = [t for t in tokenize_examples(examples, loaded.tokenizer, spec.seq_len) if t]
    fed_s, base_s = [], []
    tokens = 0
    batches: list[list[int]] = []
    seconds, tokens, batches = _federated(loaded, spec, examples)  # warm-up, records batches
    for rep in range(args.repeats):  # alternate the order, keep the best: the box is shared
        for side in ("fed", "base") if rep % 2 else ("base", "fed"):
            if side == "fed":
                seconds, fed_tokens, _ = _federated(loaded, spec, examples)
                fed_s.append(round(seconds, 2))
            else:
                seconds, base_tokens = _plain(loaded, spec, train, batches)
                base_s.append(round(seconds, 2))
    assert base_tokens == fed_tokens == tokens, (base_tokens, fed_tokens, tokens)
    fed, base = min(fed_s), min(base_s)
    print(f"model {args.model}: {len(batches)} steps, {tokens} tokens, "
          f"{spec.clients} clients x p={spec.participation}, {spec.rounds} rounds")
    print(f"plain torch loop : {tokens / base:9.1f} tok/s  ({base:.2f} s; runs {base_s})")
    print(f"federated        : {tokens / fed:9.1f} tok/s  ({fed:.2f} s; runs {fed_s})")
    print(f"overhead         : {100 * (fed / base - 1):+.2f} %  end to end (goal <= 5 %)")
    per_round = _orchestration_per_round(loaded, spec)
    share = per_round * spec.rounds / base
    print(f"orchestration    : {1000 * per_round:.2f} ms/round = {100 * share:.2f} % of the "
          "plain loop's time (copies + aggregation alone, noise-free)")


if __name__ == "__main__":
    main()
