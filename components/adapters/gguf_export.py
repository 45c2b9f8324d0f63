"""What the llama.cpp engine runs: a Llama-architecture base model as GGUF, and a peft adapter as a
GGUF LoRA adapter (LoRA, AdaLoRA) or folded into a GGUF model (IA3 and other weight-scaling
methods, which have no low-rank form).

Tensor names come from gguf's own map, and q/k rows are reordered the way llama.cpp's
`convert_hf_to_gguf.py` writes them (its rotary embedding pairs neighbouring dimensions).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ARCHITECTURES = ("LlamaForCausalLM",)
DTYPES = ("f32", "f16")


class UnsupportedForGGUF(ValueError):
    """The model or adapter cannot run on the llama.cpp engine; the message says why and what to do."""


def check_llama(config: Any) -> None:
    """Refuse a base model llama.cpp's Llama graph would not run the same way."""
    archs = getattr(config, "architectures", None) or [type(config).__name__.replace("Config", "ForCausalLM")]
    if archs[0] not in ARCHITECTURES:
        raise UnsupportedForGGUF(
            f"the llama.cpp engine runs Llama-architecture base models here, not {archs[0]}: "
            "set serve.engine to torch"
        )


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of a q or k projection in llama.cpp's rotary order (as convert_hf_to_gguf writes them)."""
    shape = weights.shape
    return weights.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _oriented(hf_name: str, array: np.ndarray, config: Any) -> np.ndarray:
    if ".self_attn.q_proj" in hf_name:
        return _permute(array, config.num_attention_heads)
    if ".self_attn.k_proj" in hf_name:
        return _permute(array, config.num_key_value_heads or config.num_attention_heads)
    return array


def _name_map(config: Any):  # noqa: ANN202
    import gguf

    return gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)


def gguf_name(names: Any, hf_name: str) -> str:
    """The GGUF tensor name of a Hugging Face parameter name (ending in .weight)."""
    name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise UnsupportedForGGUF(f"no llama.cpp tensor for {hf_name}: set serve.engine to torch")
    return name


def atomic_write(out: Path, fill) -> Path:  # noqa: ANN001
    """Write through `fill(staging_path)` to a temporary file renamed into place at the end."""
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}-", suffix=".tmp")
    os.close(handle)
    try:
        fill(staging)
        os.replace(staging, out)
    finally:
        Path(staging).unlink(missing_ok=True)
    return out


def _finish(writer: Any) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# -- base models ---------------------------------------------------------------------------------
def rope_theta(config: Any) -> float:
    """The rotary base frequency (transformers 5 keeps it in `rope_parameters`); scaled rotary
    variants are refused, since only the plain one is written."""
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise UnsupportedForGGUF(
            f"the base model uses {rope['rope_type']} rotary scaling, which is not written to GGUF here: "
            "give serve.llamacpp.base_gguf (llama.cpp's convert_hf_to_gguf.py) or set serve.engine to torch"
        )
    return float(rope.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def _hyperparameters(writer: Any, config: Any) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)


def _copy_tokenizer(writer: Any, source: Path) -> None:
    """The tokenizer.* fields of another GGUF of the same vocabulary (e.g. the packaged model)."""
    import gguf

    for field in gguf.GGUFReader(source).fields.values():
        if field.name.startswith("tokenizer."):
            sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub_type)


def _tokenizer_from_hf(writer: Any, tokenizer: Any) -> None:
    """A byte-pair vocabulary in the tokenizer's id order. The engine encodes and decodes with the
    Hugging Face tokenizer itself; llama.cpp only needs the vocabulary to size its outputs."""
    import json

    size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    special = set(tokenizer.all_special_ids)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([t if t is not None else f"[unused{i}]" for i, t in enumerate(tokens)])
    writer.add_token_types([3 if i in special else 1 for i in range(size)])  # 3: control, 1: normal
    model = json.loads(tokenizer.backend_tokenizer.to_str()).get("model", {})
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_token_merges(merges or ["<unk> <unk>"])
    for role in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{role}_token_id", None)
        if token_id is not None:
            getattr(
                writer,
                {"pad": "add_pad_token_id", "unk": "add_unk_token_id"}.get(role, f"add_{role}_token_id"),
            )(token_id)


def _model_tensors(model: Any, dtype: str) -> Iterator[tuple[str, np.ndarray]]:
    config = model.config
    names = _name_map(config)
    tied = getattr(config, "tie_word_embeddings", False)
    for hf_name, tensor in model.state_dict().items():
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        array = _oriented(hf_name, tensor.detach().float().cpu().numpy(), config)
        if array.ndim > 1 and dtype == "f16":
            array = array.astype(np.float16)
        yield gguf_name(names, hf_name), np.ascontiguousarray(array)


def write_model_gguf(
    model: Any, tokenizer: Any, out: Path, dtype: str = "f32", tokenizer_gguf: Path | None = None
) -> Path:
    """A transformers Llama model (adapter already merged, if any) as one GGUF file: 2-d weights in
    `dtype`, norms in f32; tokenizer fields copied from `tokenizer_gguf` when given."""
    import gguf

    if dtype not in DTYPES:
        raise ValueError(f"GGUF weights written directly must be one of {DTYPES}, not {dtype!r}")
    check_llama(model.config)

    def fill(path: str) -> None:
        writer = gguf.GGUFWriter(path, "llama")
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
        _hyperparameters(writer, model.config)
        if tokenizer_gguf is not None:
            _copy_tokenizer(writer, tokenizer_gguf)
        else:
            _tokenizer_from_hf(writer, tokenizer)
        for name, array in _model_tensors(model, dtype):
            writer.add_tensor(name, array)
        _finish(writer)

    return atomic_write(Path(out), fill)


# -- adapters --------------------------------------------------------------------------------------
def _low_rank_factors(module: Any, adapter: str) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) with the adapter's scaling folded into B, so that delta W = B @ A."""
    if hasattr(module, "lora_E"):  # AdaLoRA: B (A * E) * scaling / ranknum
        a = module.lora_A[adapter].detach().float() * module.lora_E[adapter].detach().float()
        b = (
            module.lora_B[adapter].detach().float()
            * module.scaling[adapter]
            / (module.ranknum[adapter] + 1e-5)
        )
        return a.numpy(), b.numpy()
    a = module.lora_A[adapter].weight.detach().float()
    b = module.lora_B[adapter].weight.detach().float()
    return a.numpy(), (b * module.scaling[adapter]).numpy()


def _lora_modules(peft_model: Any) -> Iterator[tuple[str, Any]]:
    from peft.tuners.lora import LoraLayer

    adapter = peft_model.active_adapter
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            if getattr(module, "use_dora", {}).get(adapter, False):
                raise UnsupportedForGGUF(f"{name} is a DoRA layer, which llama.cpp cannot apply: use torch")
            yield name.removeprefix("base_model.model.") + ".weight", module


def is_low_rank(peft_model: Any) -> bool:
    """Whether the adapter is LoRA-shaped (LoRA, AdaLoRA), i.e. convertible to a GGUF LoRA adapter."""
    return any(True for _ in _lora_modules(peft_model))


def write_lora_gguf(peft_model: Any, out: Path) -> Path:
    """A LoRA or AdaLoRA peft model's low-rank factors as a llama.cpp LoRA adapter (scale 1)."""
    import gguf

    config = peft_model.get_base_model().config
    check_llama(config)
    names = _name_map(config)
    adapter = peft_model.active_adapter

    def fill(path: str) -> None:
        writer = gguf.GGUFWriter(path, "llama")
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0)  # 0: llama.cpp applies B @ A as is
        for hf_name, module in _lora_modules(peft_model):
            a, b = _low_rank_factors(module, adapter)
            base = gguf_name(names, hf_name)
            writer.add_tensor(f"{base}.lora_a", np.ascontiguousarray(a))
            writer.add_tensor(f"{base}.lora_b", np.ascontiguousarray(_oriented(hf_name, b, config)))
        _finish(writer)

    return atomic_write(Path(out), fill)
