"""How the base model loads (components/adapters/precision.py): the `model` options parsed and
validated, refused with the key and the reason where this machine lacks the hardware, and applied
in one place when the model loads (dtype, attention, gradient checkpointing)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.adapters.base_model import load_base_model
from components.adapters.builder import build_retro_model
from components.adapters.precision import (
    LoadOptions,
    UnsupportedHardware,
    check_hardware,
    cpu_dtype,
    cpu_has_bf16,
    load_kwargs,
    resolve_device,
)
from components.core.config import ParamsError
from components.core.params import ModelParams, parse_params
from components.core.serve_params import TorchEngineSettings
from components.serving.answerer import served_options
from components.training.examples import Example
from components.training.trainer import answer_loss, collate, encode

CPU = torch.device("cpu")
GPU = torch.device("cuda", 0)  # a device name; nothing here runs on it
no_gpu = pytest.mark.skipif(
    torch.cuda.is_available(), reason="the refusals are those of a machine without a GPU"
)


def test_the_model_section_takes_every_option_and_names_a_bad_value() -> None:
    params = parse_params(
        {
            "model": {
                "dtype": "float16",
                "quantization": "nf4",
                "gradient_checkpointing": True,
                "attention": "sdpa",
                "device": "cuda",
            }
        }  # fmt: skip
    )
    assert LoadOptions.from_params(params.model) == LoadOptions("float16", "nf4", True, "sdpa", "cuda")
    assert LoadOptions.from_params(ModelParams()) == LoadOptions(device="auto")  # the defaults
    with pytest.raises(ParamsError, match=r"model\.quantization"):
        parse_params({"model": {"quantization": "nf5"}})
    with pytest.raises(ParamsError, match=r"model\.device"):
        parse_params({"model": {"device": "gpu"}})


@no_gpu
@pytest.mark.parametrize(
    ("options", "key", "reason"),
    [
        (LoadOptions(quantization="nf4"), "model.quantization", "needs a CUDA GPU"),
        (LoadOptions(quantization="int8"), "model.quantization", "needs a CUDA GPU"),
        (LoadOptions(dtype="float16"), "model.dtype", "float16 needs a GPU"),
        (LoadOptions(attention="flash_attention_2"), "model.attention", "needs a CUDA GPU"),
    ],
)
def test_what_the_cpu_cannot_run_is_refused_before_anything_loads(
    options: LoadOptions, key: str, reason: str, tmp_path: Path
) -> None:
    with pytest.raises(UnsupportedHardware, match=reason) as refused:
        load_base_model(str(tmp_path / "no-such-model"), options=options)  # refused before any read
    assert str(refused.value).startswith(key)


@no_gpu
def test_cuda_and_auto_without_a_gpu() -> None:
    with pytest.raises(UnsupportedHardware, match=r"^model\.device: cuda needs a CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == CPU


def test_bfloat16_loads_where_the_cpu_runs_it_and_is_refused_where_it_is_emulated(tiny_model: Path) -> None:
    options = LoadOptions(dtype="bfloat16")
    if cpu_has_bf16():
        model, _ = load_base_model(str(tiny_model), options=options)
        assert next(model.parameters()).dtype == torch.bfloat16
        assert cpu_dtype("bfloat16") == "bfloat16"
    else:
        with pytest.raises(UnsupportedHardware, match=r"^model\.dtype: bfloat16 on this CPU is emulated"):
            check_hardware(options, CPU)
        assert cpu_dtype("bfloat16") == "float32"
    assert cpu_dtype("float16") == "float32"  # the CPU-side helpers never load float16


def test_nf4_is_qlora_style_four_bit_weights_with_compute_in_the_dtype() -> None:
    kwargs = load_kwargs(LoadOptions(dtype="bfloat16", quantization="nf4", attention="sdpa"), GPU)
    config = kwargs["quantization_config"]
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert kwargs["dtype"] == torch.bfloat16 and kwargs["attn_implementation"] == "sdpa"
    assert kwargs["device_map"] == {"": 0}
    assert load_kwargs(LoadOptions(quantization="int8"), GPU)["quantization_config"].load_in_8bit
    assert load_kwargs(LoadOptions(), CPU) == {"dtype": torch.float32}  # nothing else by default


def test_the_attention_option_reaches_the_loaded_model(tiny_model: Path) -> None:
    for attention in ("eager", "sdpa"):
        model, _ = load_base_model(str(tiny_model), options=LoadOptions(attention=attention))
        assert model.config._attn_implementation == attention


def _loss_and_adapter_grads(tiny_model: Path, checkpointing: bool) -> tuple[float, torch.Tensor, bool]:
    base, tokenizer = load_base_model(
        str(tiny_model), options=LoadOptions(gradient_checkpointing=checkpointing)
    )
    torch.manual_seed(0)
    model = build_retro_model(
        base, tokenizer, "lora", {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}
    )
    example = Example("q1", "Who owns it?", "the team", "d1", ["The team owns it."])
    batch = collate(model, [encode(model, example, 64)], [example])
    model.train()
    loss = answer_loss(model, model, batch)[0]
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.trainable_parameters()])
    return loss.item(), grads, unwrap_checkpointing(model)


def unwrap_checkpointing(model: torch.nn.Module) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def test_gradient_checkpointing_keeps_the_loss_and_the_adapter_gradients(tiny_model: Path) -> None:
    plain_loss, plain_grads, plain_on = _loss_and_adapter_grads(tiny_model, checkpointing=False)
    loss, grads, on = _loss_and_adapter_grads(tiny_model, checkpointing=True)
    assert on and not plain_on
    assert loss == pytest.approx(plain_loss, rel=1e-5)
    assert grads.abs().sum() > 0 and torch.allclose(grads, plain_grads, rtol=1e-4, atol=1e-6)


def test_the_served_model_loads_as_serve_torch_says() -> None:
    assert served_options(None) is None
    served = served_options(TorchEngineSettings(device="cpu", dtype="float32"))
    assert served == LoadOptions(device="cpu", section="serve.torch")
    with pytest.raises(UnsupportedHardware, match=r"^serve\.torch\.dtype: float16 needs a GPU"):
        check_hardware(served_options(TorchEngineSettings(device="cpu", dtype="float16")), CPU)
    with pytest.raises(UnsupportedHardware, match=r"^serve\.torch\.decode_weights: int8 is a CPU kernel"):
        served_options(TorchEngineSettings(decode_weights="int8", device="cuda"))
