"""Generation throughput: scalefed's batched sampler vs a per-problem ``model.generate`` loop.

Both produce n samples per problem with the same sampling settings and stop
sequences; tokens/s counts the tokens each sample keeps (up to its stop), so
work spent on already-finished rows counts as waste, as it does in wall time.

    python tests/benchmarks/bench_generation.py --problems 8 --n 10
"""

from __future__ import annotations

import argparse
import time

import torch

from trainer.evaluation.generation import SamplingConfig, sample_completions
from trainer.evaluation.humaneval import (
    STOP_SEQUENCES,
    has_stopped,
    prepare_prompt,
    select_problems,
)
from trainer.models import load_model


def kept_tokens(tokenizer, texts: list[str]) -> int:
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def baseline(model, tokenizer, prompts: list[str], cfg: SamplingConfig) -> tuple[list[str], float]:
    torch.manual_seed(cfg.seed)
    texts: list[str] = []
    start = time.perf_counter()
    for prompt in prompts:
        enc = tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, temperature=cfg.temperature,
                                 top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                 num_return_sequences=cfg.n, stop_strings=list(STOP_SEQUENCES),
                                 tokenizer=tokenizer, pad_token_id=tokenizer.pad_token_id)
        for row in out[:, enc["input_ids"].shape[1]:]:
            texts.append(_until_stop(tokenizer, row.tolist()))
    return texts, time.perf_counter() - start


def _until_stop(tokenizer, ids: list[int]) -> str:
    """The prefix a per-sequence stop would have kept (what the sample is worth)."""
    text = ""
    for tok in ids:
        if tok in (tokenizer.eos_token_id, tokenizer.pad_token_id):
            break
        text += tokenizer.decode([tok])
        if has_stopped(text):
            break
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--problems", default="8")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--batch-rows", type=int, default=80)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    prompts = [prepare_prompt(p["prompt"]) for p in select_problems(args.problems)]
    cfg = SamplingConfig(n=args.n, max_new_tokens=args.max_new_tokens, batch_rows=args.batch_rows)

    base_texts, base_s = baseline(loaded.model, loaded.tokenizer, prompts, cfg)
    ours, stats = sample_completions(loaded.model, loaded.tokenizer, prompts, config=cfg)
    our_texts = [t for row in ours for t in row]
    base_tok = kept_tokens(loaded.tokenizer, base_texts)
    our_tok = kept_tokens(loaded.tokenizer, our_texts)
    base_rate, our_rate = base_tok / base_s, our_tok / stats.seconds
    print(f"problems={len(prompts)} n={args.n} max_new_tokens={args.max_new_tokens} "
          f"threads={torch.get_num_threads()}")
    print(f"baseline generate loop : {base_tok:6d} tokens in {base_s:7.1f}s = {base_rate:7.1f} tok/s")
    print(f"scalefed batched       : {our_tok:6d} tokens in {stats.seconds:7.1f}s = "
          f"{our_rate:7.1f} tok/s")
    print(f"speed-up (tokens/s)    : {our_rate / base_rate:.2f}x   "
          f"(per-sample wall: {base_s / len(base_texts):.2f}s -> "
          f"{stats.seconds / len(our_texts):.2f}s)")


if __name__ == "__main__":
    main()
