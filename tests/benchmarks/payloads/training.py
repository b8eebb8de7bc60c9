"""Payload: federated LoRA training rounds on a fixed workload (packed rows); JSON out."""

from __future__ import annotations

import argparse
import json

from trainer.contract import TrialSpec
from trainer.federated.rounds import train_federated
from trainer.models import load_model
from trainer.threads import configure_threads

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--rounds", type=int, default=2)
parser.add_argument("--batch-size", type=int, default=4)
parser.add_argument("--seq-len", type=int, default=256)
parser.add_argument("--corpus", default="stdlib")
parser.add_argument("--dtype", default="float32")
args = parser.parse_args()
configure_threads()
params = {"model": args.model, "clients": 10, "participation": 0.5, "budget_mode": "rounds",
          "rounds": args.rounds, "local_steps": 1, "batch_size": args.batch_size,
          "seq_len": args.seq_len, "lora_rank": 8, "lora_targets": "q_proj,v_proj",
          "max_examples": 2000, "learning_rate": 1e-3, "scaling_factor": 1.0, "seed": 0,
          "corpus": args.corpus}
loaded = load_model(args.model, dtype=args.dtype)
warm = TrialSpec.from_dict(params | {"rounds": 1, "participation": 0.1})
train_federated(loaded=loaded, spec=warm, progress=False).release()  # imports, caches
run = train_federated(loaded=loaded, spec=TrialSpec.from_dict(params), progress=False,
                      holdout=32)
run.release()
print(json.dumps({"train_s": run.timings["train_s"], "tokens": run.tokens,
                  "steps": run.local_steps_total,
                  "losses": [e.train_loss for e in run.events],
                  "holdout": [e.intermediate for e in run.events]}))
