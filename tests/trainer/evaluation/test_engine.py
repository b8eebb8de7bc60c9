from __future__ import annotations

import pytest
import torch

from trainer.errors import ConfigError
from trainer.evaluation.engine import check_engine, engine_settings, sampling_model
from trainer.evaluation.generation import SamplingConfig
from trainer.evaluation.humaneval import prepare_prompt, select_problems
from trainer.evaluation.prefixcache import SharedPrefixCache
from trainer.models import LoadedModel, load_model


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model("tiny-random")


def _prompts(count: int) -> list[str]:
    return [prepare_prompt(p["prompt"]) for p in select_problems(str(count))]


def _brute_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for one row: q [Hq, D], keys/values [Hkv, L, D] (GQA)."""
    hq, d = q.shape
    rep = hq // keys.shape[0]
    k, v = keys.repeat_interleave(rep, dim=0), values.repeat_interleave(rep, dim=0)
    w = torch.softmax((q[:, None, :] @ k.transpose(-1, -2))[:, 0] / d ** 0.5, dim=-1)
    return (w[:, None, :] @ v)[:, 0].reshape(-1)


class _Harness:
    """A one-layer SharedPrefixCache fed random keys, values and queries, next to the
    plain list of each row's keys and values that brute-force attention reads."""

    def __init__(self, hq: int, hkv: int, d: int, n: int) -> None:
        self.gen = torch.Generator().manual_seed(0)
        self.hq, self.hkv, self.d, self.n = hq, hkv, d, n
        self.cache = SharedPrefixCache(num_layers=1)
        self.prompts: list[tuple[torch.Tensor, torch.Tensor]] = []  # valid tokens' (k, v)
        self.history: list[list[tuple[torch.Tensor, torch.Tensor]]] = []  # per row: suffix

    def add_group(self, lengths: list[int]) -> None:
        width, hkv, d = max(lengths), self.hkv, self.d
        k = torch.randn(len(lengths), hkv, width, d, generator=self.gen)
        v = torch.randn(len(lengths), hkv, width, d, generator=self.gen)
        valid = torch.tensor([[c >= width - length for c in range(width)] for length in lengths])
        self.cache.add_group([k], [v], valid, self.n)
        for j, length in enumerate(lengths):
            for _ in range(self.n):
                self.prompts.append((k[j, :, width - length:], v[j, :, width - length:]))
                self.history.append([])

    def step(self, q_scale: float = 1.0) -> None:
        rows, hkv, d = self.cache.rows, self.hkv, self.d
        q = torch.randn(rows, self.hq, 1, d, generator=self.gen) * q_scale
        k = torch.randn(rows, hkv, 1, d, generator=self.gen)
        v = torch.randn(rows, hkv, 1, d, generator=self.gen)
        self.cache.begin_step()
        out = self.cache.attend(0, q, k, v, d ** -0.5)
        for r in range(rows):
            self.history[r].append((k[r, :, 0], v[r, :, 0]))
            past = self.history[r]
            keys = torch.cat([self.prompts[r][0], torch.stack([h[0] for h in past], dim=1)], 1)
            vals = torch.cat([self.prompts[r][1], torch.stack([h[1] for h in past], dim=1)], 1)
            torch.testing.assert_close(out[r], _brute_attention(q[r, :, 0], keys, vals))

    def select(self, keep: list[int]) -> None:
        self.cache.select(torch.tensor(keep))
        self.prompts[:] = [self.prompts[i] for i in keep]
        self.history[:] = [self.history[i] for i in keep]


def test_prefix_cache_attention_equals_full_softmax_per_row(prefix_path: str) -> None:
    """Two prefill groups (left padding), rows dropped mid-way, a group joining after
    decoding started: every row's output equals softmax attention over its own prompt
    followed by its own generated tokens, computed row by row."""
    h = _Harness(hq=6, hkv=2, d=8, n=3)
    h.add_group([5, 3])
    h.step()
    h.step()
    h.select([0, 2, 3, 5])  # drop rows of both prompts
    assert h.cache.groups[0].n == 2  # each prompt's 2 remaining rows fill its first 2 slots
    h.step()
    h.add_group([4])
    h.step()
    h.step()
    h.select([r for r in range(h.cache.rows) if r >= 4])  # the first group leaves entirely
    assert len(h.cache.groups) == 1 and h.cache.width == 2  # columns no row uses are dropped
    h.step()


@pytest.fixture(params=["fused", "generic"])
def prefix_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the CPU's fused kernel and on the device-generic path CUDA takes."""
    from trainer.evaluation import prefixcache

    monkeypatch.setattr(prefixcache, "FUSED_ON_CPU", request.param == "fused")
    return str(request.param)


def test_prefix_cache_fused_kernel_edge_cases_equal_full_softmax(prefix_path: str) -> None:
    """SmolLM2's head layout (9 query heads on 3 kv heads, D = 64) through the fused
    prefix kernel: a one-token prompt behind 599 columns of padding (a whole key block of
    the kernel masked), a prompt whose rows all finish (its slots empty), an empty
    prompt, rows joining with a single suffix key, and scores spread wide enough (standard deviation 10) that
    one part outweighs the other in the merge by many orders of magnitude."""
    h = _Harness(hq=9, hkv=3, d=64, n=2)
    h.add_group([1, 600, 40])
    h.step(q_scale=10.0)
    h.step()
    h.select([0, 1, 5])  # prompt 1's rows both finish; prompt 2 keeps one row
    h.step(q_scale=10.0)
    h.add_group([3, 0, 1])  # an empty prompt: its rows attend to their suffix alone
    h.step(q_scale=10.0)
    h.select([0, 4, 5, 6, 8])
    h.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_generic_prefix_attention_equals_the_fused_kernel(dtype: torch.dtype) -> None:
    """The matmul path (what CUDA runs) against the CPU kernel: a left-padded prompt, an
    empty one (o = 0, lse = 0 on both), wide scores; float32 exactly, bf16 within its
    rounding (the generic path computes in float32, the kernel in bf16 with float32
    accumulation)."""
    from trainer.evaluation.prefixcache import _additive, prefix_attention

    gen = torch.Generator().manual_seed(1)
    q = (torch.randn(3, 2, 6, 16, generator=gen) * 3).to(dtype)
    k, v = (torch.randn(3, 2, 40, 16, generator=gen).to(dtype) for _ in range(2))
    valid = torch.ones(3, 40, dtype=torch.bool)
    valid[0, :31] = False  # 9 real tokens behind left padding
    valid[2] = False  # an empty prompt
    bias = _additive(valid, dtype)[:, None, None, :]
    o_f, lse_f = prefix_attention(q, k, v, bias, fused=True)
    o_g, lse_g = prefix_attention(q, k, v, bias, fused=False)
    assert o_g.dtype == dtype
    tol = {} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(o_g, o_f, **tol)
    torch.testing.assert_close(lse_g.float(), lse_f.float(), **tol)
    assert bool((o_g[2] == 0).all()) and bool((lse_g[2] == 0).all())


@pytest.mark.parametrize("fast_head", [False, True])
def test_prefix_decode_logits_equal_a_full_forward(tiny: LoadedModel, fast_head: bool) -> None:
    """Prefill two left-padded prompts, decode greedy tokens with the shared-prefix step,
    rows finishing on the way (they skip the model but keep their cache places): each
    live row's logits equal the model's plain forward over its whole sequence, with the
    model's LM head and with the oneDNN copy of it."""
    from trainer.evaluation.batches import prefill_batch
    from trainer.evaluation.engine import decode_head

    head = decode_head(tiny.model, "fp32") if fast_head else None
    if fast_head and head is None:
        pytest.skip("no oneDNN in this torch build")
    prompts = _prompts(2)
    batch = prefill_batch(tiny.model, tiny.tokenizer, prompts, first=0, n=2, engine="fp32",
                          seed=0, head=head)
    seqs = [tiny.tokenizer(p)["input_ids"] for p in prompts for _ in range(2)]
    live = [0, 1, 2, 3]
    with torch.inference_mode():
        for still in ([0, 1, 2, 3], [0, 2, 3], [0, 3], [3]):
            assert batch.logits is not None
            tokens = batch.logits.argmax(-1)
            for j, r in enumerate(live):
                full = tiny.model(input_ids=torch.tensor([seqs[r]])).logits[0, -1]
                torch.testing.assert_close(batch.logits[j], full, rtol=1e-4, atol=1e-4)
                seqs[r].append(int(tokens[j]))
            keep = [j for j, r in enumerate(live) if r in still]
            live = still
            batch.advance(tiny.model, tokens[keep],
                          None if len(still) == 4 else torch.tensor(still))


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


@pytest.mark.parametrize("prefix", ["fused", "generic"])
def test_bf16_prefix_decode_with_an_adapter_tracks_the_fp32_forward(
        prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine in bf16 (bf16 base weights, an fp32 LoRA adapter, bf16 prefix cache,
    fp32 suffix and merge) decodes logits close to the fp32 model's plain forward over the
    same tokens: relative L2 error within 3% at every step (bf16 keeps 8 significant bits,
    about 0.4% per rounding; 2 layers and the LM head add a few such roundings) and the
    same greedy token. The fp32 engine, by the same measure, is exact to 1e-4 (above)."""
    from peft import LoraConfig, get_peft_model

    from trainer.evaluation import prefixcache
    from trainer.evaluation.batches import prefill_batch

    monkeypatch.setattr(prefixcache, "FUSED_ON_CPU", prefix == "fused")
    models = {}
    for name, dtype in (("fp32", "float32"), ("bf16", "bfloat16")):
        loaded = load_model("tiny-random", dtype=dtype)
        torch.manual_seed(0)
        model = get_peft_model(loaded.model, LoraConfig(r=4, lora_alpha=8,
                                                        target_modules=["q_proj", "v_proj"]))
        with torch.no_grad():
            for pname, param in model.named_parameters():
                if "lora_B" in pname:
                    param.copy_(torch.randn(param.shape, generator=torch.Generator()
                                            .manual_seed(len(pname))) * 0.5)
        models[name] = (model.eval(), loaded.tokenizer)
    bf16, tokenizer = models["bf16"]
    fp32 = models["fp32"][0]
    assert {p.dtype for p in bf16.parameters() if p.requires_grad} == {torch.float32}
    prompts = _prompts(2)
    batch = prefill_batch(bf16, tokenizer, prompts, first=0, n=2, engine="prefix", seed=0)
    seqs = [tokenizer(p)["input_ids"] for p in prompts for _ in range(2)]
    with torch.inference_mode():
        for _ in range(4):
            assert batch.logits is not None
            tokens = batch.logits.float().argmax(-1)
            for r in range(4):
                full = fp32(input_ids=torch.tensor([seqs[r]])).logits[0, -1]
                got = batch.logits[r].float()
                assert float((got - full).norm() / full.norm()) < 0.03
                assert int(tokens[r]) == int(full.argmax())
                seqs[r].append(int(tokens[r]))
            batch.advance(bf16, tokens, None)
