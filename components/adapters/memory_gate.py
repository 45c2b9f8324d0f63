"""A zero-initialised tanh gate on the memory part of attention (`fusion: gated`, `fusion.gate`).

With chunk key/values in front of the question, each attention layer computes two attentions
for the question's tokens: over their own tokens (what the model computes without retrieval)
and over the chunks' key/values, and adds them:

    out = attention(q, own) + tanh(g) * attention(q, memory)

with one gate `g` per layer (`layer`) or per layer and head (`head`), all zero at the start, so a
fresh adapter is exactly the base model without retrieval and training opens the gate as far as
the chunks help (Flamingo's gating, applied to the model's own attention over the chunks).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ATTENTION = "retro_memory_gate"
_ACTIVE: ContextVar[tuple[int, MemoryGate] | None] = ContextVar("retro_memory_gate", default=None)


class MemoryGate(nn.Module):
    """tanh gates on the memory attention, per layer or per layer and head, initialised at zero."""

    def __init__(self, layers: int, heads: int, per: str = "layer") -> None:
        super().__init__()
        if per not in ("layer", "head"):
            raise ValueError(f"the memory gate is per layer or head, got {per!r}")
        self.gate = nn.Parameter(torch.zeros(layers, heads if per == "head" else 1))

    def scale(self, layer: int) -> torch.Tensor:
        """[1, 1, heads or 1, 1]: broadcast over attention outputs [batch, tokens, heads, dim]."""
        return torch.tanh(self.gate[layer])[None, None, :, None]


@contextmanager
def gating(memory_width: int, gate: MemoryGate) -> Iterator[None]:
    """Within this block, attention treats the first `memory_width` key/values as gated memory."""
    token = _ACTIVE.set((memory_width, gate))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _reachable(mask: torch.Tensor) -> torch.Tensor:
    """[B, 1 or H, T, 1]: does a query see any key under `mask` (bool, or additive float)?"""
    allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    return allowed.any(dim=-1, keepdim=True)


def gated_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """sdpa over the question's own keys plus the gated sdpa over the memory keys."""
    active = _ACTIVE.get()
    if active is None or active[0] == 0:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    width, gate = active
    kwargs.pop("is_causal", None)
    own_mask = None if attention_mask is None else attention_mask[..., width:]
    memory_mask = None if attention_mask is None else attention_mask[..., :width]
    own, _ = sdpa_attention_forward(module, query, key[:, :, width:], value[:, :, width:], own_mask, **kwargs)
    memory, _ = sdpa_attention_forward(
        module, query, key[:, :, :width], value[:, :, :width], memory_mask, is_causal=False, **kwargs
    )
    if memory_mask is not None:  # a question without chunks: no memory term (not NaN)
        seen = _reachable(memory_mask).transpose(1, 2)  # [B, T, 1 or H, 1] like the outputs
        memory = torch.where(seen, memory, torch.zeros_like(memory))
    return own + gate.scale(module.layer_idx).to(memory.dtype) * memory, None


AttentionInterface.register(ATTENTION, gated_attention)
