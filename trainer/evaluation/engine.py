"""Sampling engines: which model and which KV cache the batched sampler decodes with.

Why these choices (measured on the 2-core reference machine; see
``tests/benchmarks/bench_sampling.py``):

* A decode step at 80 rows spent ~30% of its time in ``DynamicCache``'s
  per-step ``torch.cat`` (a full copy of every layer's cache for every token),
  most of the rest outside the Linear layers in attention over n identical
  copies of each prompt, and ~35% in the Linear layers. The ``fp32`` engine keeps
  the model as trained and decodes with :mod:`trainer.evaluation.prefixcache`:
  each prompt's keys and values stored once, each row's own tokens written in
  place, attention split into prefix and suffix parts merged exactly. Its
  numerics equal the reference path's up to floating-point summation order.
* The ``int8`` engine also runs the Linear layers (LM head included) as
  fbgemm dynamic int8 GEMMs on a merged copy of the model (adapter folded into
  the weights, per-output-channel weight scales, one activation scale per
  tensor per step). On AVX2 it decodes about 1.7x faster than ``fp32``, but it is
  NOT the default: SmolLM2's activations have outlier channels that a
  per-tensor activation scale crushes. First-token logits move by 23% (relative
  L2), greedy decodes agree with fp32 on 12% of tokens over 24 steps, and a
  trained quickstart trial scored pass@10 = 0.025 where fp32 trials score about
  0.2. Quantising only the LM head still moves the logits by 4.9%. It stays
  selectable for measurement; the run record names the engine.
* Speculative or prompt-lookup decoding was not used: at 80 rows a 135M model
  is compute-bound on CPU, so verifying draft tokens costs as much compute as
  decoding them, and rejected drafts are pure loss.
* The ``fp32`` engine's decode steps run the LM head (576 x 49,152, a fifth of a
  step's FLOPs) through oneDNN's fp32 GEMM on a copy of its weight packed once
  per sampling call: MKL reached 44-66 GFLOP/s on that shape at 60-240 rows,
  oneDNN 62-98 (``torch._C._nn.mkldnn_linear``; logits within 5e-6). The layers'
  own GEMMs stay on MKL, which was as fast or faster there, and fusing q/k/v or
  gate/up into one GEMM was slower.
* With the model's own weights, a step is ~75% GEMMs, so the remaining lever is
  how many rows each GEMM sees. Each sample now draws from its own random stream
  (:mod:`trainer.evaluation.draws`), so the batch size changes speed only, not
  the samples, and the default went from 80 to 240 rows; finished rows skip the
  Linear layers (``prefixcache.decode_step(rows=...)``) instead of riding along
  until a quarter of the batch is done.
* ``reference`` is the previous path (``DynamicCache``, the PEFT model as is),
  kept as a fallback selectable by flag.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

ENGINES = ("prefix", "int8", "reference", "fp32")
DEFAULT_ENGINE = "prefix"
# ``fp32`` named the shared-prefix engine while every trial ran in float32; since the
# trial's ``dtype`` sets the precision, it is that engine by its old name (stored
# studies and scripts keep working). Which precision ran is in ``engine_settings``.
PREFIX_ENGINES = ("prefix", "fp32")
# Rows decoded together. Since each sample has its own random stream, this changes
# speed only, not what is sampled. MKL's fp32 GEMMs on this model's shapes run at
# ~65-95 GFLOP/s at 60-80 rows and ~85-130 at 160-240 (2 cores); the batch refills at
# half capacity, so 240 keeps steps at 120-240 rows.
DEFAULT_BATCH_ROWS = 240
# On a GPU a decode step of this small model costs mostly kernel launches, nearly flat
# in the rows up to thousands, so more rows mean fewer steps. An estimate, not a
# measurement (no GPU was lent when it was set): tests/benchmarks/gpu_check.py prints
# the sampling rate it gives.
CUDA_BATCH_ROWS = 1024


def batch_rows_for(device: str) -> int:
    """The default rows decoded together on ``device`` (a speed setting only)."""
    return CUDA_BATCH_ROWS if device.startswith("cuda") else DEFAULT_BATCH_ROWS


def check_engine(name: str) -> str:
    """Validate an engine name (raises ConfigError naming the accepted values)."""
    from trainer.errors import ConfigError

    if name not in ENGINES:
        raise ConfigError("engine", f"unknown sampling engine {name!r}", accepted=", ".join(ENGINES))
    return name


DRAWS = "per-sample streams (seed, prompt, sample index); inverse-CDF nucleus"


def engine_settings(engine: str, dtype: str = "float32") -> dict[str, str]:
    """What the run record says about an engine's numerics (every engine draws alike).

    ``dtype`` is the model's weights' dtype (the trial's resolved ``dtype``)."""
    if engine == "int8":
        own = {"linear": "fbgemm dynamic int8 (per-output-channel weight scales, per-step "
                         "activation scales), adapter merged", "kv_cache": "shared prompt prefix, fp32"}
    elif engine in PREFIX_ENGINES:
        head = ("oneDNN fp32 where available" if dtype == "float32"
                else f"{dtype}, float32 logits")
        own = {"linear": f"{dtype} (LM head of decode steps: {head}; adapter unmerged, float32)",
               "kv_cache": f"shared prompt prefix in {dtype}; suffix and merge float32"}
    else:
        own = {"linear": f"{dtype} (PEFT adapter unmerged)",
               "kv_cache": "transformers DynamicCache"}
    return own | {"draws": DRAWS}


class _OneDnnHead:
    """The LM head as oneDNN's fp32 GEMM on a copy of the weight packed once."""

    def __init__(self, weight: torch.Tensor) -> None:
        self._weight = weight.detach().to_mkldnn()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        return torch._C._nn.mkldnn_linear(x.contiguous().to_mkldnn(), self._weight,
                                           None).to_dense()


def decode_head(model: Any, engine: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The LM head the decode steps of ``engine`` use: a oneDNN copy (``fp32`` on a CPU
    with oneDNN), or None for the model's own head (other engines, other devices)."""
    import torch

    from trainer.evaluation.prefixcache import causal_lm

    if engine not in PREFIX_ENGINES or not torch.backends.mkldnn.is_available():
        return None
    head = getattr(causal_lm(model), "lm_head", None)
    if (not isinstance(head, torch.nn.Linear) or head.bias is not None
            or head.weight.device.type != "cpu" or head.weight.dtype != torch.float32):
        return None
    return _OneDnnHead(head.weight)


def sampling_model(model: Any, engine: str) -> Any:
    """The module to decode with: the model itself, or an int8 merged copy (``int8``).

    The copy leaves ``model`` (and its adapter) untouched, so training state and
    the pooled base model are never modified by evaluation.
    """
    check_engine(engine)
    if engine != "int8":
        return model
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    plain = copy.deepcopy(model)
    if hasattr(plain, "merge_and_unload"):  # a PEFT model: fold the adapter into the weights
        plain = plain.merge_and_unload()
    plain.eval()
    with warnings.catch_warnings():
        # torch.ao's eager quantisation is deprecated in favour of torchao (not a dependency
        # here); the ``fp32`` engine is the way out if it is ever removed.
        warnings.simplefilter("ignore")
        return quantize_dynamic(plain, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                dtype=torch.qint8)
