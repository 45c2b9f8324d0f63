"""int8 weights for the one-token decode steps of the torch engine (`serve.torch.decode_weights`).

Decoding one token reads every weight of the model once, and on a CPU that read, not the
arithmetic, bounds the step: float32 SmolLM2-135M moves 540 MB per token. Each linear layer here
keeps its float weights for prompts (prefill, chunk key/values, training) and an int8 copy with
one float scale per output row (symmetric, round to nearest) for steps of one token per row,
which PyTorch's `_weight_int8pack_mm` kernel multiplies in bfloat16. Adapters are untouched:
under peft, only the frozen base layer is swapped, so LoRA, AdaLoRA and IA3 still add their own
float terms, and `disable_adapter` still gives the base model.
"""

from __future__ import annotations

import torch
from torch import nn


class Int8DecodeLinear(nn.Module):
    """A linear layer that multiplies single-token steps with int8 weights, everything else with
    its own float weights (which it shares, so tied embeddings stay tied)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.full = linear
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        scale = (weight.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
        self.register_buffer("qweight", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))

    @property
    def weight(self) -> torch.Tensor:
        """The float weight (peft and transformers read it for dtype and device)."""
        return self.full.weight

    @property
    def bias(self) -> torch.Tensor | None:
        """The wrapped layer's bias."""
        return self.full.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Int8 weights for one-token decode steps without gradients; the full layer otherwise."""
        if x.dim() < 3 or x.shape[-2] != 1 or torch.is_grad_enabled():
            return self.full(x)
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        out = torch._weight_int8pack_mm(rows, self.qweight, self.scale).to(x.dtype)
        if self.full.bias is not None:
            out = out + self.full.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def _base_linears(root: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, layer) of every plain nn.Linear: the frozen base layers (under peft,
    the `base_layer` inside each adapted module; adapter matrices such as lora_A are left out)."""
    found = []
    for parent in root.modules():
        if isinstance(parent, Int8DecodeLinear):
            continue
        for name, child in parent.named_children():
            if type(child) is nn.Linear and not _is_adapter_weight(parent, name):
                found.append((parent, name, child))
    return found


def _is_adapter_weight(parent: nn.Module, name: str) -> bool:
    """peft keeps adapter matrices in ModuleDicts (lora_A, lora_B, ...) keyed by adapter name."""
    return isinstance(parent, nn.ModuleDict)


def use_int8_decode(model: nn.Module) -> int:
    """Swap every frozen base linear layer of `model` for an `Int8DecodeLinear`; the number swapped.

    Refused where this PyTorch build lacks the kernel."""
    if not hasattr(torch, "_weight_int8pack_mm"):
        raise RuntimeError(
            "serve.torch.decode_weights int8 needs torch._weight_int8pack_mm, which torch "
            f"{torch.__version__} lacks (use decode_weights: full)"
        )
    layers = _base_linears(model)
    for parent, name, linear in layers:
        setattr(parent, name, Int8DecodeLinear(linear))
    return len(layers)
