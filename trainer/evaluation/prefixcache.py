"""Decoding n samples per prompt with the prompt's keys and values stored once.

The n samples of a problem share their prompt, which is most of each row's
context (a HumanEval prompt is 100-400 tokens, a completion at most 128). The
previous path repeated the prompt's cache n times, grew it by ``torch.cat``
every step (a full copy of every layer), and attended row by row: a decode step
at 80 rows spent about 30% of its time copying the cache and most of the rest
of the non-GEMM time in attention over those n identical prefixes.

Here each prefill group (a few prompts) keeps one prefix cache, ``[P, Hkv, L, D]``
per layer, and each row keeps only its own generated suffix in a buffer written
in place. Attention of a decode step is computed in two parts and merged
exactly with their log-sum-exp weights (the "cascade" form of softmax):

* prefix: the queries of all n rows of a prompt (times the GQA group) attend to
  the prompt's keys in one call of torch's fused CPU flash-attention kernel,
  reading the prefix once per prompt instead of once per row;
* suffix: each row attends to its own generated tokens, the current one included.

Why these kernels (2-core machine, SmolLM2 shapes: 3 kv heads, G = 3 query heads
each, D = 64; 80 rows):

* The prefix uses ``aten::_scaled_dot_product_flash_attention_for_cpu``: unlike
  ``scaled_dot_product_attention`` it returns the log-sum-exp the merge needs, and
  it takes the padding as an additive [P, 1, 1, L] mask. It was 1.3-1.5x faster
  than the matmul / mask / max / exp / matmul / sum chain it replaces. Queries go
  in folded as [P, Hkv, n * G, D]; the kernel's own GQA layout [P, Hq, n, D] was
  as fast at n = 20 and 25% slower at n = 10 (shorter query blocks per task).
* The suffix stays two matrix products: the kernel works per (row, head), and at 3
  queries per task it was 2-3x slower at 16 columns and still slower at 96. The
  chain adds the mask instead of masked_fill and skips the max's clamp.
* The kernel gives a query with no valid key output 0 and log-sum-exp 0 (not
  -inf): a prompt without tokens gets its -inf back (weight 0 in the merge); a
  suffix always has one, the row's current token.
* One scatter and one gather per layer move rows to their groups' [P, Hkv, n * G]
  query slots, from an index rebuilt only when rows change (not per step or per
  group); ``select`` packs each prompt's remaining rows into its first slots, so
  finished rows stop costing prefix compute.

Together ``attend`` is about 1.5x faster on a synthetic 80-row step (two groups,
suffixes of 1-96 columns); in a real decode of 8 prompts x 10 samples, where the
Linear layers take most of a step, it is 1.2x faster.

The decode step runs the Llama blocks directly (norms, projections, rotary
embedding, MLP are the model's own modules, so a PEFT adapter or an int8 copy
works unchanged); the prompt itself is prefilled by the model's usual forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

# Fused CPU flash attention that also returns each query's log-sum-exp, which the
# two-part merge needs (the public scaled_dot_product_attention drops it).
_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
# The CPU uses the fused kernel; tests turn this off to run the device-generic path
# (the one CUDA takes) on the CPU.
FUSED_ON_CPU = True


def _additive(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where a key is valid, -inf where not: the kernel takes only an additive mask
    in the query's dtype (not a boolean one)."""
    return torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill_(
        ~valid, float("-inf"))


@dataclass
class _Group:
    """The prompts prefilled together: their keys/values once, and which slots are theirs."""

    keys: list[torch.Tensor]  # per layer, [P, Hkv, L, D]
    values: list[torch.Tensor]
    valid: torch.Tensor  # [P, L] bool; False on left padding
    n: int  # slots per prompt: the samples at prefill, fewer once select compacts them
    bias: torch.Tensor = field(init=False)  # [P, 1, 1, L] additive mask from ``valid``
    empty: torch.Tensor | None = field(init=False)  # [P] prompts without a token, if any

    def __post_init__(self) -> None:
        self.bias = _additive(self.valid, self.keys[0].dtype)[:, None, None, :]
        empty = ~self.valid.any(dim=-1)
        self.empty = empty if bool(empty.any()) else None


class SharedPrefixCache:
    """Prefix caches per prefill group, plus each row's generated suffix.

    The prefix keeps the model's dtype (bf16 halves what each step reads); the
    suffix and the merge are float32 whatever the model's dtype: each row's own
    tokens are few, and a softmax summed in bf16 would lose the small terms.
    ``device`` is where the model runs: every index lives there too, and only
    the CPU uses the fused CPU flash kernel (see :func:`prefix_attention`).
    """

    def __init__(self, *, num_layers: int, device: torch.device | str = "cpu") -> None:
        self.num_layers = num_layers
        self.device = torch.device(device)
        self.groups: list[_Group] = []
        self.row_group = torch.zeros(0, dtype=torch.long, device=self.device)
        self.row_slot = torch.zeros(0, dtype=torch.long, device=self.device)
        self.suffix_k: list[torch.Tensor] = []  # per layer [B, Hkv, capacity, D], float32
        self.suffix_v: list[torch.Tensor] = []
        self.suffix_valid = torch.zeros((0, 0), dtype=torch.bool, device=self.device)
        self.width = 0  # suffix columns in use
        # Each (row, kv head)'s place among all groups' prefix query slots, and each group's
        # slot count (see _slot_index). Rows change only in add_group and select, which
        # mark it stale (None); begin_step then rebuilds it, not every step or layer.
        self._slots: tuple[torch.Tensor, list[int]] | None = None
        self._suffix_bias = torch.zeros(0)  # [B, 1, 1, width], set once per step

    @property
    def rows(self) -> int:
        return int(self.row_group.numel())

    def add_group(self, keys: list[torch.Tensor], values: list[torch.Tensor],
                  valid: torch.Tensor, n: int) -> None:
        """Append P prompts' prefixes and their P * n rows (with empty suffixes)."""
        prompts = valid.shape[0]
        self.groups.append(_Group(keys=keys, values=values, valid=valid.bool(), n=n))
        self._slots = None
        new = prompts * n
        dev = self.device
        self.row_group = torch.cat([self.row_group, torch.full(
            (new,), len(self.groups) - 1, dtype=torch.long, device=dev)])
        self.row_slot = torch.cat([self.row_slot, torch.arange(new, device=dev)])
        if not self.suffix_k:
            h, d = keys[0].shape[1], keys[0].shape[-1]
            self.suffix_k = [torch.zeros((0, h, 0, d), device=dev) for _ in range(self.num_layers)]
            self.suffix_v = [torch.zeros((0, h, 0, d), device=dev) for _ in range(self.num_layers)]
        cap = self.suffix_valid.shape[1]
        self.suffix_k = [torch.cat([s, s.new_zeros((new, *s.shape[1:]))]) for s in self.suffix_k]
        self.suffix_v = [torch.cat([s, s.new_zeros((new, *s.shape[1:]))]) for s in self.suffix_v]
        self.suffix_valid = torch.cat([self.suffix_valid,
                                       torch.zeros((new, cap), dtype=torch.bool, device=dev)])

    def select(self, keep: torch.Tensor) -> None:
        """Keep only these rows; drop groups left without rows and suffix columns no row uses."""
        keep = keep.to(self.device)
        group, slot = self.row_group[keep], self.row_slot[keep]
        used = sorted(set(group.tolist()))
        remap = torch.full((len(self.groups),), -1, dtype=torch.long, device=self.device)
        remap[torch.tensor(used, dtype=torch.long, device=self.device)] = torch.arange(
            len(used), device=self.device)
        self.groups = [self.groups[g] for g in used]
        self.row_group = remap[group]
        self.row_slot = self._compact(self.row_group, slot)
        self._slots = None
        valid = self.suffix_valid[keep, :self.width]
        cols = valid.any(dim=0).nonzero()
        start = int(cols[0]) if cols.numel() else self.width
        self.suffix_k = [s[keep, :, start:self.width] for s in self.suffix_k]
        self.suffix_v = [s[keep, :, start:self.width] for s in self.suffix_v]
        self.suffix_valid = valid[:, start:]
        self.width -= start

    def _compact(self, group: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        """New slots for the kept rows: each prompt's rows take its first slots and each group
        shrinks to its fullest prompt, so finished rows stop costing prefix compute."""
        rank: list[tuple[int, int]] = []  # per row: (prompt, rank among that prompt's rows)
        count: dict[tuple[int, int], int] = {}
        for gi, s in zip(group.tolist(), slot.tolist(), strict=True):
            key = (gi, s // self.groups[gi].n)
            rank.append((key[1], count.get(key, 0)))
            count[key] = count.get(key, 0) + 1
        for gi, g in enumerate(self.groups):
            g.n = max(c for (cg, _), c in count.items() if cg == gi)
        return torch.tensor([p * self.groups[gi].n + r for gi, (p, r)
                             in zip(group.tolist(), rank, strict=True)], dtype=torch.long,
                            device=self.device)

    def begin_step(self) -> int:
        """Reserve the suffix column of this step's token (all rows); returns its index."""
        if self.width == self.suffix_valid.shape[1]:
            grow = max(16, self.width)
            self.suffix_k = [torch.cat([s, s.new_zeros((*s.shape[:2], grow, s.shape[-1]))], dim=2)
                             for s in self.suffix_k]
            self.suffix_v = [torch.cat([s, s.new_zeros((*s.shape[:2], grow, s.shape[-1]))], dim=2)
                             for s in self.suffix_v]
            self.suffix_valid = torch.cat(
                [self.suffix_valid, torch.zeros((self.rows, grow), dtype=torch.bool,
                                                device=self.device)], dim=1)
        self.suffix_valid[:, self.width] = True
        self.width += 1
        # Every row has this step's token as a valid suffix key, so no row's suffix is
        # fully masked (the suffix's max needs no clamp).
        self._suffix_bias = _additive(self.suffix_valid[:, :self.width],
                                      self.suffix_k[0].dtype)[:, None, None, :]
        if self._slots is None:
            self._slots = self._slot_index()
        return self.width - 1

    def _slot_index(self) -> tuple[torch.Tensor, list[int]]:
        """Where each (row, kv head) sits in the prefix queries of all groups, laid out
        group after group as [P, Hkv, n] (prompt, kv head, sample); and each group's size."""
        hkv = self.suffix_k[0].shape[1]
        sizes = [group.valid.shape[0] * hkv * group.n for group in self.groups]
        dev = self.device
        start = torch.tensor([0, *sizes], dtype=torch.long, device=dev).cumsum(0)[self.row_group]
        n = torch.tensor([group.n for group in self.groups], dtype=torch.long,
                         device=dev)[self.row_group]
        prompt, sample = self.row_slot // n, self.row_slot % n
        heads = torch.arange(hkv, device=dev)
        index = (start + prompt * hkv * n + sample)[:, None] + heads[None, :] * n[:, None]
        return index.reshape(-1), sizes

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               scale: float) -> torch.Tensor:
        """Store this step's k/v and return softmax attention over prefix + suffix.

        ``q``: [B, Hq, 1, D]; ``k``, ``v``: [B, Hkv, 1, D]. Returns [B, Hq * D].
        """
        col = self.width - 1
        self.suffix_k[layer][:, :, col] = k[:, :, 0]
        self.suffix_v[layer][:, :, col] = v[:, :, 0]
        b, hq, _, d = q.shape
        hkv = k.shape[1]
        qg = q.reshape(b, hkv, hq // hkv, d) * scale  # GQA: query heads grouped by kv head
        o_s, lse_s = _suffix(qg.float(), self.suffix_k[layer][:, :, :self.width],
                             self.suffix_v[layer][:, :, :self.width], self._suffix_bias)
        o_p, lse_p = self._prefix(layer, qg)
        # Cascade merge: out = (e^lse_p o_p + e^lse_s o_s) / (e^lse_p + e^lse_s), written
        # as o_s + sigmoid(lse_p - lse_s) (o_p - o_s): two cheap ops, no overflow.
        w = torch.sigmoid(lse_p.float() - lse_s)
        out = torch.lerp(o_s, o_p.float(), w.unsqueeze(-1)).reshape(b, hq * d)
        return out.to(q.dtype)

    def _prefix(self, layer: int, qg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention of every row to its prompt: (output [B, Hkv, G, D], lse [B, Hkv, G])."""
        assert self._slots is not None, "begin_step first"
        index, sizes = self._slots
        b, hkv, g, d = qg.shape
        # One scatter puts each row's G queries per kv head where its group's [P, Hkv, n * G, D]
        # layout wants them (zeros where a slot's row has finished), so that one kernel call per
        # group reads each prompt's keys once for all its rows. Folding G into the query length
        # measured faster than the kernel's own GQA (9 heads of n queries) at n = 10.
        slots = qg.new_zeros((sum(sizes), g, d)).index_copy_(0, index, qg.view(b * hkv, g, d))
        outs, lses = [], []
        for group, part in zip(self.groups, slots.split(sizes), strict=True):
            prompts = group.valid.shape[0]
            o, lse = prefix_attention(part.view(prompts, hkv, group.n * g, d),
                                      group.keys[layer], group.values[layer], group.bias)
            if group.empty is not None:  # the kernel gives o = 0, lse = 0 for no valid key
                lse = lse.masked_fill(group.empty[:, None, None], float("-inf"))
            outs.append(o.reshape(-1, g, d))
            lses.append(lse.reshape(-1, g))
        o_all, lse_all = (torch.cat(outs), torch.cat(lses)) if len(outs) > 1 else (outs[0], lses[0])
        return (o_all.index_select(0, index).view(b, hkv, g, d),
                lse_all.index_select(0, index).view(b, hkv, g))


def prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                     *, fused: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of queries [P, H, M, D] (already scaled) to keys/values
    [P, H, L, D] under an additive mask [P, 1, 1, L]: (output [P, H, M, D], lse [P, H, M]).

    On the CPU (``fused`` None) torch's fused CPU flash kernel; elsewhere, or with
    ``fused=False``, plain matrix products in float32 that any device runs (the tests
    compare the two on the CPU). A query with no valid key gets output 0 and lse 0,
    as the kernel gives it (the caller masks those)."""
    if fused is None:
        fused = q.device.type == "cpu" and FUSED_ON_CPU
    if fused:
        o, lse = _flash(q, k, v, attn_mask=bias, scale=1.0)
        return o, lse
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)).add_(bias.float())
    m = scores.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = scores.sub_(m).exp_()
    total = p.sum(dim=-1, keepdim=True)
    empty = total == 0
    out = torch.matmul(p, v.float()).div_(total.masked_fill(empty, 1.0))
    lse = (m + total.masked_fill(empty, 1.0).log()).squeeze(-1)
    return out.to(q.dtype), lse


def _suffix(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's attention to its own suffix: (output [B, Hkv, G, D], lse [B, Hkv, G]).

    Plain matrix products, not the flash kernel: with G = 3 queries per row and kv
    head, the kernel's per-(row, head) overhead made it slower here beyond a few
    columns. No clamp of the max: every row's own token is a valid key."""
    scores = torch.matmul(q, k.transpose(-1, -2)).add_(bias)
    m = scores.amax(dim=-1, keepdim=True)
    p = scores.sub_(m).exp_()
    total = p.sum(dim=-1, keepdim=True)
    return torch.matmul(p, v).div_(total), (m + total.log()).squeeze(-1)


def model_device(model: Any) -> torch.device:
    """The device of a model's weights (where its inputs and caches must live)."""
    return next(model.parameters()).device


def causal_lm(model: Any) -> Any:
    """The LlamaForCausalLM inside ``model`` (a PEFT wrapper keeps its adapted modules)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def left_padded_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: 0 at each row's first real token (padding gets 0)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def prefill(model: Any, input_ids: torch.Tensor, mask: torch.Tensor,
            cache: SharedPrefixCache, n: int) -> torch.Tensor:
    """Run left-padded prompts through the model's own forward once; store their keys and
    values as one group with n rows per prompt; return the rows' first logits [P*n, V]."""
    from transformers import DynamicCache

    positions = left_padded_positions(mask)
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                cache=DynamicCache(), use_cache=True, logits_to_keep=1)
    layers = out.cache.layers
    cache.add_group([layer.keys for layer in layers], [layer.values for layer in layers],
                    mask, n)
    return out.logits[:, -1, :].repeat_interleave(n, dim=0)


def decode_step(model: Any, tokens: torch.Tensor, positions: torch.Tensor,
                cache: SharedPrefixCache,
                head: Callable[[torch.Tensor], torch.Tensor] | None = None, *,
                rows: torch.Tensor | None = None) -> torch.Tensor:
    """One token through the Llama blocks for each of ``rows`` (all rows if None);
    returns their next-token logits [len(rows), V], from ``head`` if given (a faster
    kernel for the model's LM head), else the model's own.

    ``tokens`` holds one token per computed row; ``positions`` one per cache row. Rows
    left out (finished, awaiting compaction) skip every Linear layer; they get zero
    queries, keys and values in attention, whose outputs are dropped."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    lm = causal_lm(model)
    inner = lm.model
    hidden = inner.embed_tokens(tokens[:, None])
    cos, sin = inner.rotary_emb(hidden, (positions if rows is None else positions[rows])[:, None])
    b = tokens.shape[0]
    cache.begin_step()
    for i, layer in enumerate(inner.layers):
        attn = layer.self_attn
        x = layer.input_layernorm(hidden)
        q = attn.q_proj(x).view(b, 1, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, 1, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(b, 1, -1, attn.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if rows is not None:
            q, k, v = (_spread(t, rows, cache.rows) for t in (q, k, v))
        out = cache.attend(i, q, k, v, attn.scaling)
        if rows is not None:
            out = out.index_select(0, rows)
        hidden = hidden + attn.o_proj(out[:, None])
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    last = inner.norm(hidden)[:, 0]
    return head(last) if head is not None else lm.lm_head(last)


def _spread(t: torch.Tensor, rows: torch.Tensor, total: int) -> torch.Tensor:
    """The computed rows' tensor placed at their cache rows, zeros elsewhere."""
    return t.new_zeros((total, *t.shape[1:])).index_copy_(0, rows, t)
