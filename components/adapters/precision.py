"""How the base model's weights are placed and stored: device, dtype, quantization, attention,
gradient checkpointing (the `model` section of params.yaml).

Every such option is applied here, in one place, when the base model loads (`load_kwargs` before
`from_pretrained`, `finish_loading` after it). An option the hardware cannot run is refused
before anything loads, with the key and the reason (`check_hardware`): quantized weights and
float16 without a CUDA GPU, bfloat16 on a CPU without native bfloat16 (AVX512-BF16 or AMX),
FlashAttention without a GPU or its package.

Quantization is bitsandbytes' (QLoRA's NF4 and LLM.int8()): the format peft's LoRA layers wrap
directly and `prepare_model_for_kbit_training` expects. It is an optional dependency
(`pip install bitsandbytes`), needed only when `quantization` is not `none`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # torch loads with the model, not with this module (the llama.cpp engine needs none)
    import torch

Dtype = Literal["float32", "bfloat16", "float16"]
Quantization = Literal["none", "int8", "nf4"]
Attention = Literal["auto", "eager", "sdpa", "flash_attention_2"]
Device = Literal["auto", "cpu", "cuda"]


class UnsupportedHardware(ValueError):
    """A `model` option this machine cannot run; the message names the key and the reason."""


@dataclass(frozen=True)
class LoadOptions:
    """The `model` options that decide how the base model loads (defaults: float32 on the CPU)."""

    dtype: Dtype = "float32"
    quantization: Quantization = "none"
    gradient_checkpointing: bool = False
    attention: Attention = "auto"
    device: Device = "cpu"
    section: str = "model"  # the params section the options come from, for the messages

    @classmethod
    def from_params(cls, model: Any) -> LoadOptions:
        """The options of a `ModelParams` (or anything with the same attributes)."""
        names = ("dtype", "quantization", "gradient_checkpointing", "attention", "device")
        return cls(**{name: getattr(model, name) for name in names})


def cpu_has_bf16() -> bool:
    """Does this CPU run bfloat16 matmuls natively (AVX512-BF16 or AMX)? Without it bfloat16 is
    emulated and many times slower than float32."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def cpu_dtype(dtype: Dtype) -> Dtype:
    """The dtype a helper that always runs on the CPU (the question teacher, the chunk key/value
    encoder of the index stage) loads in: `dtype` where this CPU runs it natively, else float32."""
    return dtype if dtype == "float32" or (dtype == "bfloat16" and cpu_has_bf16()) else "float32"


def resolve_device(device: Device, section: str = "model") -> torch.device:
    """`auto` is CUDA when torch sees a GPU, else the CPU; `cuda` without a GPU is refused."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UnsupportedHardware(
            f"{section}.device: cuda needs a CUDA GPU, and torch sees none; use auto or cpu"
        )
    return torch.device(device)


def check_hardware(options: LoadOptions, device: torch.device) -> None:
    """Refuse, before anything loads, what `device` cannot run; the message names the key."""
    import torch

    gpu, key = device.type == "cuda", options.section
    if options.quantization != "none":
        if not gpu:
            raise UnsupportedHardware(
                f"{key}.quantization: {options.quantization} needs a CUDA GPU (bitsandbytes' quantized "
                f"matmuls); this run is on {device.type}. Use quantization: none here."
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UnsupportedHardware(
                f"{key}.quantization: {options.quantization} needs bitsandbytes: pip install bitsandbytes"
            )
    if options.dtype == "float16" and not gpu:
        raise UnsupportedHardware(
            f"{key}.dtype: float16 needs a GPU (a CPU has no float16 matmuls to train with); "
            "use bfloat16 or float32"
        )
    if options.dtype == "bfloat16" and gpu and not torch.cuda.is_bf16_supported():
        raise UnsupportedHardware(
            f"{key}.dtype: bfloat16 needs an Ampere or newer GPU; use float16 or float32"
        )
    if options.dtype == "bfloat16" and not gpu and not cpu_has_bf16():
        raise UnsupportedHardware(
            f"{key}.dtype: bfloat16 on this CPU is emulated (no AVX512-BF16 or AMX) and many times "
            "slower than float32; use float32"
        )
    if options.attention == "flash_attention_2" and not gpu:
        raise UnsupportedHardware(f"{key}.attention: flash_attention_2 needs a CUDA GPU; use auto or sdpa")
    if options.attention == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise UnsupportedHardware(
            f"{key}.attention: flash_attention_2 needs the flash-attn package; use sdpa"
        )


def quantization_config(options: LoadOptions) -> Any | None:
    """transformers' BitsAndBytesConfig for `options.quantization` (None for none): NF4 with double
    quantization and compute in `dtype`, as QLoRA trains; or LLM.int8()."""
    if options.quantization == "none":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if options.quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.float32 if options.dtype == "float32" else getattr(torch, options.dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )


def load_kwargs(options: LoadOptions, device: torch.device) -> dict[str, Any]:
    """The keyword arguments of `from_pretrained` for these options on this device."""
    import torch

    kwargs: dict[str, Any] = {"dtype": getattr(torch, options.dtype)}
    if options.attention != "auto":
        kwargs["attn_implementation"] = options.attention
    quantized = quantization_config(options)
    if quantized is not None:  # bitsandbytes places the weights as it quantizes them
        kwargs["quantization_config"] = quantized
        kwargs["device_map"] = {"": device.index or 0}
    return kwargs


def finish_loading(model: Any, options: LoadOptions, device: torch.device) -> Any:
    """Place the loaded model and turn on what applies after loading; returns it in eval mode."""
    if options.quantization != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=options.gradient_checkpointing
        )
    elif device.type != "cpu":
        model = model.to(device)
    if options.gradient_checkpointing:
        # non-reentrant: gradients reach the adapter even though the frozen inputs need none
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x's name for it
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.eval()
    return model


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's weights are (the CPU for a model without parameters)."""
    import torch

    return next((p.device for p in model.parameters()), torch.device("cpu"))
