from __future__ import annotations

import pytest
import torch

from trainer.errors import ConfigError
from trainer.evaluation.engine import check_engine, engine_settings, sampling_model
from trainer.evaluation.generation import SamplingConfig, sample_completions
from trainer.evaluation.humaneval import prepare_prompt, select_problems
from trainer.evaluation.kvcache import GrowingCache, GrowingLayer
from trainer.models import LoadedModel, load_model


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model("tiny-random")


def _prompts(count: int) -> list[str]:
    return [prepare_prompt(p["prompt"]) for p in select_problems(str(count))]


def test_growing_layer_holds_what_concatenation_holds() -> None:
    """Many small appends (crossing several capacity doublings), a row selection and a
    repeat leave exactly the tensors DynamicCache's torch.cat would hold."""
    gen = torch.Generator().manual_seed(0)
    mine = GrowingLayer()
    keys, values = [], []
    for t in [5, 1, 1, 13, 1, 40, 1]:
        k, v = torch.randn(3, 2, t, 4, generator=gen), torch.randn(3, 2, t, 4, generator=gen)
        keys.append(k)
        values.append(v)
        out_k, out_v = mine.update(k, v)
        assert torch.equal(out_k, torch.cat(keys, dim=-2))
        assert torch.equal(out_v, torch.cat(values, dim=-2))
    assert mine.get_seq_length() == 62
    idx = torch.tensor([2, 0])
    mine.batch_select_indices(idx)
    assert torch.equal(mine.keys, torch.cat(keys, dim=-2)[idx])
    mine.batch_repeat_interleave(3)
    assert torch.equal(mine.values, torch.cat(values, dim=-2)[idx].repeat_interleave(3, dim=0))
    k, v = torch.randn(6, 2, 1, 4, generator=gen), torch.randn(6, 2, 1, 4, generator=gen)
    out_k, _ = mine.update(k, v)
    assert torch.equal(out_k[:, :, -1:], k) and out_k.shape[-2] == 63


def test_stacking_left_pads_the_shorter_cache() -> None:
    a, b = GrowingCache(1), GrowingCache(1)
    ka, kb = torch.ones(2, 1, 3, 2), 2 * torch.ones(1, 1, 5, 2)
    a.update(ka, ka, 0)
    b.update(kb, kb, 0)
    a.stack_left_padded(b)
    keys = a.layers[0].keys
    assert keys.shape == (3, 1, 5, 2) and a.get_seq_length() == 5
    assert torch.equal(keys[:2, :, 2:], ka) and bool((keys[:2, :, :2] == 0).all())
    assert torch.equal(keys[2:], kb)


def test_fp32_engine_samples_exactly_as_the_reference_path(tiny: LoadedModel) -> None:
    """Same seed, same samples: the in-place cache changes no number, only the copying."""
    prompts = _prompts(3)
    out = {}
    for engine in ("fp32", "reference"):
        cfg = SamplingConfig(n=4, max_new_tokens=10, seed=3, batch_rows=6, engine=engine)
        out[engine], _ = sample_completions(tiny.model, tiny.tokenizer, prompts, config=cfg)
    assert out["fp32"] == out["reference"]


def test_int8_copy_is_close_and_leaves_the_model_untouched(tiny: LoadedModel) -> None:
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    quantized = sampling_model(tiny.model, "int8")
    assert quantized is not tiny.model
    after = tiny.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    enc = tiny.tokenizer(_prompts(2), return_tensors="pt", padding=True, padding_side="left")
    with torch.inference_mode():
        ref = tiny.model(**enc).logits[:, -1]
        got = quantized(**enc).logits[:, -1]
    assert not torch.equal(ref, got)  # really quantised
    rel = float((ref - got).norm() / ref.norm())
    assert rel < 0.05, rel
    assert sampling_model(tiny.model, "fp32") is tiny.model


def test_int8_engine_folds_a_lora_adapter_in(tiny: LoadedModel) -> None:
    """The int8 copy of an adapted model decodes with the adapter's effect included."""
    from peft import LoraConfig, get_peft_model

    base = load_model("tiny-random").model
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    enc = tiny.tokenizer(_prompts(1), return_tensors="pt")
    with torch.inference_mode():
        adapted = peft_model(**enc).logits[:, -1]
        quantized = sampling_model(peft_model, "int8")(**enc).logits[:, -1]
        with peft_model.disable_adapter():
            plain = peft_model(**enc).logits[:, -1]
    assert float((adapted - quantized).norm()) < 0.25 * float((adapted - plain).norm())
    assert any("lora_B" in n for n, _ in peft_model.named_parameters())  # adapter still there


def test_unknown_engine_is_rejected_naming_the_choices() -> None:
    with pytest.raises(ConfigError) as err:
        check_engine("vllm")
    assert err.value.field == "engine" and "int8" in str(err.value)
    with pytest.raises(ConfigError):
        SamplingConfig(engine="fast")
    assert "int8" in engine_settings("int8")["linear"]
