"""Payload: train one quickstart trial's adapter (its federated rounds only); save it."""

from __future__ import annotations

import argparse
import json

import torch

from optimizer.study.studyfile import load_study_file
from trainer.contract import TrialSpec
from trainer.federated.rounds import train_federated
from trainer.models import load_model

parser = argparse.ArgumentParser()
parser.add_argument("--study", default="studies/quickstart.toml")
parser.add_argument("--distribution", default="iid")
parser.add_argument("--scaling-factor", type=float, default=2.8)
parser.add_argument("--participation", type=float, default=0.5)
parser.add_argument("--out", required=True)
parser.add_argument("--dtype", default="float32")
args = parser.parse_args()
cfg = load_study_file(args.study)
spec = TrialSpec.from_dict(cfg.base_params(cfg.distribution(args.distribution)) | {
    "scaling_factor": args.scaling_factor, "participation": args.participation,
    "dtype": args.dtype})
loaded = load_model(spec.model, dtype=args.dtype)
run = train_federated(loaded=loaded, spec=spec, progress=False)
peft_config = run.model.peft_config["default"]
config = {"r": peft_config.r, "lora_alpha": peft_config.lora_alpha,
          "target_modules": sorted(peft_config.target_modules), "lora_dropout": 0.0,
          "bias": "none", "task_type": "CAUSAL_LM"}
state = {name: p.detach().float().clone() for name, p in run.model.named_parameters()
         if p.requires_grad}
torch.save({"config": config, "state": state}, args.out)
print(json.dumps({"params": len(state), "rounds": run.rounds, "spec": spec.to_dict()}))
