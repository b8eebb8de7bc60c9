"""Payload: sample (and with --execute, score) HumanEval with the default engine; JSON out.

``--adapter FILE`` loads a LoRA adapter state dict (saved by bench_sampling) first.
"""

from __future__ import annotations

import argparse
import json

from trainer.evaluation.evaluator import EvalConfig, evaluate_model
from trainer.models import load_model
from trainer.threads import configure_threads

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--problems", default="smollm2-solvable")
parser.add_argument("--n", type=int, default=20)
parser.add_argument("--k", type=int, default=10)
parser.add_argument("--max-new-tokens", type=int, default=96)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--adapter")
parser.add_argument("--dtype", default="float32")  # the previous tree's models are fp32
args = parser.parse_args()
configure_threads()
loaded = load_model(args.model, dtype=args.dtype)
model = loaded.model
if args.adapter:
    import torch
    from peft import LoraConfig, get_peft_model

    saved = torch.load(args.adapter)
    model = get_peft_model(model, LoraConfig(**saved["config"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in saved["state"]:
                param.copy_(saved["state"][name])
    model.eval()
cfg = EvalConfig(problems=args.problems, n=args.n, ks=(1, args.k), seed=args.seed,
                 max_new_tokens=args.max_new_tokens)
report = evaluate_model(model, loaded.tokenizer, config=cfg, model_name=args.model)
print(json.dumps({"generate_s": report.timings["generate_s"],
                  "tokens": report.generated_tokens, "correct": list(report.correct),
                  "n": report.n, "pass": report.pass_at, "engine": cfg.engine}))
