"""Retrieved chunks as the base model's own key/values (`fusion: kv`).

Each chunk is encoded once, on its own, by the frozen base model (positions 0..L-1); its keys and
values at every layer are kept. A question then attends to the concatenated key/values of its
chunks through the model's own attention, so nothing new has to learn how to read them.

Positions: rotary (RoPE) models keep keys rotated at 0..L-1 and are shifted at assembly by the
chunk's offset (rotations compose: R(offset) R(p) = R(offset + p)), so chunks sit contiguously in
any order and the question follows the last one. Models with absolute position embeddings
(GPT-2) cannot move an encoded chunk; every chunk keeps positions 0..L-1 and the question starts
after the longest (the composite positions of TurboRAG / Block-Attention). Encoder-decoder models
have no decoder-side prompt to prepend to and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.cache_utils import DynamicCache
from transformers.models.llama.modeling_llama import rotate_half


@dataclass(frozen=True)
class ChunkKV:
    """One chunk's keys and values per layer, each [heads, length, head_dim], keys rotated at 0.."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]

    @property
    def length(self) -> int:
        """Number of tokens the cached chunk spans."""
        return int(self.keys[0].shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached keys and values."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def to(self, device: torch.device) -> ChunkKV:
        """The same key/values on `device` (itself when they are there already)."""
        if self.keys[0].device == device:
            return self
        return ChunkKV(tuple(k.to(device) for k in self.keys), tuple(v.to(device) for v in self.values))


@dataclass
class KVMemory:
    """Key/values of each question's chunks, right-padded into one cache.

    `mask` [B, M] marks the real memory slots; `starts` [B] is the position of each question's
    first token."""

    cache: DynamicCache | None
    mask: torch.Tensor
    starts: torch.Tensor


def rotary_embedding(base: nn.Module) -> nn.Module | None:
    """The model's rotary embedding module (Llama-style models), or None for absolute positions."""
    inner = getattr(base, "model", None)
    return getattr(inner, "rotary_emb", None)


def check_family(base: nn.Module, fusion: str = "kv") -> None:
    """Fusion over chunk key/values (kv, gated) needs a decoder-only model."""
    if getattr(base.config, "is_encoder_decoder", False):
        raise ValueError(
            f"fusion {fusion} needs a decoder-only model; {type(base).__name__} is encoder-decoder "
            "(use in_context)"
        )


@torch.no_grad()
def encode_chunk_kv(base: nn.Module, tokenizer, texts: list[str], max_tokens: int) -> list[ChunkKV]:  # noqa: ANN001
    """Each text encoded on its own by `base` (no adapter, no gradient): its per-layer key/values."""
    tokenizer.padding_side = "right"
    batch = tokenizer(
        texts,
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=max_tokens,
        add_special_tokens=False,
    )
    cache = DynamicCache(config=base.config)
    base(**batch, cache=cache, use_cache=True)
    lengths = batch["attention_mask"].sum(1).tolist()
    return [
        ChunkKV(
            tuple(layer.keys[row, :, :n].clone() for layer in cache.layers),
            tuple(layer.values[row, :, :n].clone() for layer in cache.layers),
        )
        for row, n in enumerate(lengths)
    ]


def rotation(
    rotary: nn.Module, offset: int, length: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [length, head_dim] of a move by `offset` positions (the same at every layer)."""
    positions = torch.full((1, length), offset, dtype=torch.long)
    probe = torch.empty(1, length, 1, dtype=dtype)
    cos, sin = rotary(probe, positions)
    scale = float(getattr(rotary, "attention_scaling", 1.0)) or 1.0  # cos/sin come pre-scaled
    return (cos[0] / scale).to(dtype), (sin[0] / scale).to(dtype)


def rotate(keys: torch.Tensor, turn: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Keys [heads, length, head_dim] moved by a `rotation` (None: left where they are)."""
    if turn is None:
        return keys
    cos, sin = turn
    return keys * cos.unsqueeze(0) + rotate_half(keys) * sin.unsqueeze(0)


def shift_keys(keys: torch.Tensor, offset: int, rotary: nn.Module) -> torch.Tensor:
    """Keys rotated at positions p, moved to p + offset (keys [heads, length, head_dim])."""
    return rotate(keys, rotation(rotary, offset, keys.shape[1], keys.dtype) if offset else None)


def _placed(chunks: list[ChunkKV], rotary: nn.Module | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One question's chunks side by side: per-layer keys (moved to their offsets) and values."""
    offsets = [sum(c.length for c in chunks[:i]) for i in range(len(chunks))]
    turns = [
        None if rotary is None or not o else rotation(rotary, o, c.length, c.keys[0].dtype)
        for c, o in zip(chunks, offsets, strict=True)
    ]
    layers = range(len(chunks[0].keys))
    keys = [
        torch.cat([rotate(c.keys[i], t) for c, t in zip(chunks, turns, strict=True)], dim=1) for i in layers
    ]
    values = [torch.cat([c.values[i] for c in chunks], dim=1) for i in layers]
    return keys, values


def assemble(rows: list[list[ChunkKV]], rotary: nn.Module | None) -> KVMemory:
    """One cache for a batch: each row's chunks side by side (shifted where rotary), right-padded."""
    placed = [_placed(chunks, rotary) if chunks else ([], []) for chunks in rows]
    widths = [keys[0].shape[1] if keys else 0 for keys, _ in placed]
    starts = [
        0 if not chunks else w if rotary is not None else max(c.length for c in chunks)
        for chunks, w in zip(rows, widths, strict=True)
    ]
    width = max(widths)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, w in enumerate(widths):
        mask[i, :w] = 1
    if width == 0:
        return KVMemory(None, mask, torch.tensor(starts, dtype=torch.long))
    if len(rows) == 1:  # nothing to pad
        keys, values = placed[0]
        layers = [(k.unsqueeze(0), v.unsqueeze(0)) for k, v in zip(keys, values, strict=True)]
        return KVMemory(DynamicCache(layers), mask, torch.tensor(starts, dtype=torch.long))
    sample_keys, sample_values = next(p for p, w in zip(placed, widths, strict=True) if w)
    layers = []
    for layer, (k0, v0) in enumerate(zip(sample_keys, sample_values, strict=True)):
        k = k0.new_zeros(len(rows), k0.shape[0], width, k0.shape[2])
        v = v0.new_zeros(len(rows), v0.shape[0], width, v0.shape[2])
        for i, ((keys, values), w) in enumerate(zip(placed, widths, strict=True)):
            if w:
                k[i, :, :w], v[i, :, :w] = keys[layer], values[layer]
        layers.append((k, v))
    return KVMemory(DynamicCache(layers), mask, torch.tensor(starts, dtype=torch.long))


def question_inputs(memory: KVMemory, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """attention_mask over memory + question and the question tokens' position ids (either
    padding side: positions count only real tokens)."""
    device = attention_mask.device
    positions = memory.starts.to(device)[:, None] + (attention_mask.long().cumsum(1) - 1).clamp(min=0)
    return {
        "attention_mask": torch.cat([memory.mask.to(device), attention_mask.long()], dim=1),
        "position_ids": positions,
    }
