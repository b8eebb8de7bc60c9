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
  the prompt's keys as one matrix product, reading the prefix once per prompt
  instead of once per row;
* suffix: each row attends to its own generated tokens, the current one included.

The decode step runs the Llama blocks directly (norms, projections, rotary
embedding, MLP are the model's own modules, so a PEFT adapter or an int8 copy
works unchanged); the prompt itself is prefilled by the model's usual forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class _Group:
    """The prompts prefilled together: their keys/values once, and which slots are theirs."""

    keys: list[torch.Tensor]  # per layer, [P, Hkv, L, D]
    values: list[torch.Tensor]
    valid: torch.Tensor  # [P, L] bool; False on left padding
    n: int  # rows (slots) per prompt


class SharedPrefixCache:
    """Prefix caches per prefill group, plus each row's generated suffix."""

    def __init__(self, *, num_layers: int) -> None:
        self.num_layers = num_layers
        self.groups: list[_Group] = []
        self.row_group = torch.zeros(0, dtype=torch.long)
        self.row_slot = torch.zeros(0, dtype=torch.long)
        self.suffix_k: list[torch.Tensor] = []  # per layer [B, Hkv, capacity, D]
        self.suffix_v: list[torch.Tensor] = []
        self.suffix_valid = torch.zeros((0, 0), dtype=torch.bool)  # [B, capacity]
        self.width = 0  # suffix columns in use
        # Per group: its rows and their slots. Rows change only between steps (add_group,
        # select), so begin_step computes this once instead of once per layer.
        self._members: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def rows(self) -> int:
        return int(self.row_group.numel())

    def add_group(self, keys: list[torch.Tensor], values: list[torch.Tensor],
                  valid: torch.Tensor, n: int) -> None:
        """Append P prompts' prefixes and their P * n rows (with empty suffixes)."""
        prompts = valid.shape[0]
        self.groups.append(_Group(keys=keys, values=values, valid=valid.bool(), n=n))
        new = prompts * n
        self.row_group = torch.cat([self.row_group,
                                    torch.full((new,), len(self.groups) - 1, dtype=torch.long)])
        self.row_slot = torch.cat([self.row_slot, torch.arange(new)])
        if not self.suffix_k:
            h, d = keys[0].shape[1], keys[0].shape[-1]
            self.suffix_k = [keys[0].new_zeros((0, h, 0, d)) for _ in range(self.num_layers)]
            self.suffix_v = [values[0].new_zeros((0, h, 0, d)) for _ in range(self.num_layers)]
        cap = self.suffix_valid.shape[1]
        self.suffix_k = [torch.cat([s, s.new_zeros((new, *s.shape[1:]))]) for s in self.suffix_k]
        self.suffix_v = [torch.cat([s, s.new_zeros((new, *s.shape[1:]))]) for s in self.suffix_v]
        self.suffix_valid = torch.cat([self.suffix_valid,
                                       torch.zeros((new, cap), dtype=torch.bool)])

    def select(self, keep: torch.Tensor) -> None:
        """Keep only these rows; drop groups left without rows and suffix columns no row uses."""
        group, slot = self.row_group[keep], self.row_slot[keep]
        used = sorted(set(group.tolist()))
        remap = torch.full((len(self.groups),), -1, dtype=torch.long)
        remap[torch.tensor(used, dtype=torch.long)] = torch.arange(len(used))
        self.groups = [self.groups[g] for g in used]
        self.row_group, self.row_slot = remap[group], slot
        valid = self.suffix_valid[keep, :self.width]
        cols = valid.any(dim=0).nonzero()
        start = int(cols[0]) if cols.numel() else self.width
        self.suffix_k = [s[keep, :, start:self.width] for s in self.suffix_k]
        self.suffix_v = [s[keep, :, start:self.width] for s in self.suffix_v]
        self.suffix_valid = valid[:, start:]
        self.width -= start

    def begin_step(self) -> int:
        """Reserve the suffix column of this step's token (all rows); returns its index."""
        if self.width == self.suffix_valid.shape[1]:
            grow = max(16, self.width)
            self.suffix_k = [torch.cat([s, s.new_zeros((*s.shape[:2], grow, s.shape[-1]))], dim=2)
                             for s in self.suffix_k]
            self.suffix_v = [torch.cat([s, s.new_zeros((*s.shape[:2], grow, s.shape[-1]))], dim=2)
                             for s in self.suffix_v]
            self.suffix_valid = torch.cat(
                [self.suffix_valid, torch.zeros((self.rows, grow), dtype=torch.bool)], dim=1)
        self.suffix_valid[:, self.width] = True
        self.width += 1
        rows = [(self.row_group == gi).nonzero().squeeze(-1) for gi in range(len(self.groups))]
        self._members = [(r, self.row_slot[r]) for r in rows]
        return self.width - 1

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
        mask = self.suffix_valid[:, None, None, :self.width]
        o_s, m_s, l_s = _partial(qg, self.suffix_k[layer][:, :, :self.width],
                                 self.suffix_v[layer][:, :, :self.width], mask)
        o_p, m_p, l_p = self._prefix(layer, qg)
        m = torch.maximum(m_s, m_p)
        a, c = torch.exp(m_p - m), torch.exp(m_s - m)
        out = (o_p * a + o_s * c) / (l_p * a + l_s * c)
        return out.reshape(b, hq * d)

    def _prefix(self, layer: int, qg: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, hkv, g, d = qg.shape
        o = qg.new_empty((b, hkv, g, d))
        m = qg.new_empty((b, hkv, g, 1))
        s = qg.new_empty((b, hkv, g, 1))
        for group, (rows, take) in zip(self.groups, self._members, strict=True):
            prompts = group.valid.shape[0]
            slots = qg.new_zeros((prompts * group.n, hkv, g, d))
            slots[take] = qg[rows]
            # [P, n, Hkv, G, D] -> [P, Hkv, n*G, D]: one product per prompt and kv head.
            per_prompt = slots.view(prompts, group.n, hkv, g, d).transpose(1, 2) \
                .reshape(prompts, hkv, group.n * g, d)
            po, pm, ps = _partial(per_prompt, group.keys[layer], group.values[layer],
                                  group.valid[:, None, None, :])

            def back(t: torch.Tensor, group: _Group = group, prompts: int = prompts) -> torch.Tensor:
                t = t.view(prompts, hkv, group.n, g, t.shape[-1]).transpose(1, 2)
                return t.reshape(prompts * group.n, hkv, g, t.shape[-1])

            o[rows], m[rows], s[rows] = back(po)[take], back(pm)[take], back(ps)[take]
        return o, m, s


def _partial(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unnormalised attention over one part: (sum_j e^(s_j - m) v_j, m, sum_j e^(s_j - m)).

    ``q`` is already scaled. A row with no valid key gets m = -inf-safe values
    (weight zero after the merge)."""
    scores = torch.matmul(q, k.transpose(-1, -2)).masked_fill(~mask, float("-inf"))
    m = scores.amax(dim=-1, keepdim=True).clamp(min=torch.finfo(scores.dtype).min)
    p = torch.exp(scores - m)
    return torch.matmul(p, v), m, p.sum(dim=-1, keepdim=True)


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
                cache: SharedPrefixCache) -> torch.Tensor:
    """One token per row through the Llama blocks; returns next-token logits [B, V]."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    lm = causal_lm(model)
    inner = lm.model
    hidden = inner.embed_tokens(tokens[:, None])
    cos, sin = inner.rotary_emb(hidden, positions[:, None])
    rows = tokens.shape[0]
    cache.begin_step()
    for i, layer in enumerate(inner.layers):
        attn = layer.self_attn
        x = layer.input_layernorm(hidden)
        q = attn.q_proj(x).view(rows, 1, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(rows, 1, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(rows, 1, -1, attn.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        out = cache.attend(i, q, k, v, attn.scaling)
        hidden = hidden + attn.o_proj(out[:, None])
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    return lm.lm_head(inner.norm(hidden))[:, 0]
