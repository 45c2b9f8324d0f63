"""Retrieval fusion blocks: low-rank cross-attention from decoder states to retrieved-chunk encodings.

`cross_attention` adds the block's output to the residual stream through a zero-initialised output
projection (RETRO-style chunked cross-attention, made low-rank); `gated` multiplies it by a tanh
gate initialised at zero, per layer or per token (Flamingo). Either way a freshly attached block
changes nothing: the model's logits are exactly the base model's until training moves them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from components.core.name_registry import Registry

FUSIONS: Registry[nn.Module] = Registry("fusion mode")


class LowRankCrossAttention(nn.Module):
    """Multi-head attention in a rank-`rank` space from hidden states (queries) to memory (keys/values)."""

    def __init__(
        self,
        d_model: int,
        d_memory: int,
        rank: int = 32,
        heads: int = 4,
        gate: str = "none",
        zero_init_output: bool = True,
    ) -> None:
        super().__init__()
        if rank % heads:
            raise ValueError(f"fusion rank {rank} must be divisible by heads {heads}")
        if gate not in ("none", "layer", "token"):
            raise ValueError(f"fusion gate must be none, layer or token, got {gate!r}")
        self.rank, self.heads, self.gate_kind = rank, heads, gate
        self.norm = nn.LayerNorm(d_model)
        self.memory_norm = nn.LayerNorm(d_memory)  # chunk states can have large outlier dimensions
        self.q = nn.Linear(d_model, rank, bias=False)
        self.k = nn.Linear(d_memory, rank, bias=False)
        self.v = nn.Linear(d_memory, rank, bias=False)
        self.out = nn.Linear(rank, d_model, bias=False)
        if zero_init_output:
            nn.init.zeros_(self.out.weight)
        else:
            nn.init.normal_(self.out.weight, std=1.0 / math.sqrt(rank))
        if gate == "layer":
            self.gate = nn.Parameter(torch.zeros(1))
        elif gate == "token":
            self.gate = nn.Linear(d_model, 1)
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)

    def forward(
        self, hidden: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The residual update for `hidden` [B, T, d] given `memory` [B, M, d_mem] (mask [B, M])."""
        b, t, _ = hidden.shape
        h = self.heads
        x = self.norm(hidden)
        q = self.q(x).view(b, t, h, -1).transpose(1, 2)
        m = self.memory_norm(memory.to(x.dtype))
        k = self.k(m).view(b, memory.shape[1], h, -1).transpose(1, 2)
        v = self.v(m).view(b, memory.shape[1], h, -1).transpose(1, 2)
        mask = None
        if memory_mask is not None:
            mask = memory_mask[:, None, None, :].to(torch.bool)
        attended = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        update = self.out(attended.transpose(1, 2).reshape(b, t, self.rank))
        if self.gate_kind == "layer":
            update = torch.tanh(self.gate) * update
        elif self.gate_kind == "token":
            update = torch.tanh(self.gate(x)) * update
        return update


@FUSIONS.register("cross_attention")
def cross_attention(d_model: int, d_memory: int, rank: int = 32, heads: int = 4, **_: object) -> nn.Module:
    return LowRankCrossAttention(d_model, d_memory, rank, heads, gate="none", zero_init_output=True)


@FUSIONS.register("gated")
def gated(
    d_model: int, d_memory: int, rank: int = 32, heads: int = 4, gate: str = "layer", **_: object
) -> nn.Module:
    if gate == "none":
        raise ValueError("the gated fusion needs gate: layer or token")
    return LowRankCrossAttention(d_model, d_memory, rank, heads, gate=gate, zero_init_output=False)
