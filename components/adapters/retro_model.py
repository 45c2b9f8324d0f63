"""RetroModel: a base model with a PEFT adapter and a retrieval fusion mode, saved as one artifact.

Fusion modes:
- `in_context`: retrieved passages are written into the prompt (no extra modules).
- `kv`: each retrieved chunk's own key/values (the frozen base model's, encoded once per chunk)
  are put before the question, which reads them through the model's own attention
  (components/adapters/chunk_kv.py); only the question and answer are run through the adapter.
- `cross_attention` / `gated`: decoder states at chosen layers attend over encodings of the
  retrieved chunks. Chunk encodings are the frozen base model's own hidden states of each chunk
  (adapter and fusion off, no gradient), cached per chunk text, so a chunk is encoded once per
  index version however many questions retrieve it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from inspect import signature
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from components.adapters import chunk_kv
from components.adapters.fusion import FUSIONS
from components.adapters.kv_store import KVStore
from components.adapters.memory_gate import ATTENTION, MemoryGate, gating
from components.adapters.peft_adapter import ARTIFACT_CONFIG, ARTIFACT_SCHEMA
from components.adapters.prompting import build_prompt

FUSION_MODES = ("in_context", "kv", "cross_attention", "gated")
FUSION_WEIGHTS = "fusion.safetensors"
# where each family keeps its decoder layers (a dotted path on the unwrapped transformers model)
DECODER_LAYERS = ("model.layers", "transformer.h", "decoder.block", "model.decoder.layers", "gpt_neox.layers")


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    base = unwrap(model)
    for path in DECODER_LAYERS:
        node: Any = base
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, nn.ModuleList):
            return node
    raise ValueError(f"cannot find the decoder layers of {type(base).__name__} (tried {DECODER_LAYERS})")


def hidden_size(config: Any) -> int:
    for name in ("hidden_size", "n_embd", "d_model"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ValueError("cannot tell the model's hidden size from its config")


class RetroModel(nn.Module):
    """Adapter-wrapped language model plus fusion blocks attached by forward hooks."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        fusion: str = "in_context",
        layers: list[int] | None = None,
        rank: int = 32,
        heads: int = 4,
        gate: str = "layer",
        chunk_tokens: int = 96,
        memory_source: str = "base",
        memory_embedder: str = "all-MiniLM-L6-v2",
        kv_gate: str = "none",
    ) -> None:
        super().__init__()
        if fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, got {fusion!r}")
        self.model, self.tokenizer, self.fusion_mode = model, tokenizer, fusion
        self.config = unwrap(model).config
        self.is_seq2seq = bool(getattr(self.config, "is_encoder_decoder", False))
        # causal LMs of transformers that can project only the last positions to the vocabulary
        forward_args = signature(unwrap(model).forward).parameters
        self.keeps_logits = not self.is_seq2seq and "logits_to_keep" in forward_args
        self.chunk_tokens = chunk_tokens
        self.settings = {
            "fusion": fusion,
            "layers": layers,
            "rank": rank,
            "heads": heads,
            "gate": gate,
            "chunk_tokens": chunk_tokens,
            "memory_source": memory_source,
            "memory_embedder": memory_embedder,
            "kv_gate": kv_gate,
        }
        if memory_source not in ("base", "embedder"):
            raise ValueError(f"memory_source must be base or embedder, got {memory_source!r}")
        self.memory_source, self.memory_embedder = memory_source, memory_embedder
        self.memory_dim = hidden_size(self.config)
        if memory_source == "embedder":
            from components.embed.encoder import load_embedder

            self.memory_dim = load_embedder(memory_embedder).get_sentence_embedding_dimension()
        self.fusion = nn.ModuleDict()
        self._memory: tuple[torch.Tensor, torch.Tensor] | None = None
        self._cache: dict[str, torch.Tensor] = {}
        self.artifact_config: dict[str, Any] = {}  # set when loaded from an artifact
        self.cache_hits = self.cache_misses = 0
        model_id = f"{getattr(self.config, '_name_or_path', '')}:{getattr(self.config, 'dtype', '')}"
        self.kv_store = KVStore(model_id, chunk_tokens, self._encode_key_values)  # RAM; see use_kv_folder
        if fusion == "kv":
            chunk_kv.check_family(unwrap(model))
            if kv_gate != "none":
                self._attach_memory_gate(kv_gate)
        if fusion in ("in_context", "kv"):
            return
        all_layers = decoder_layers(model)
        if layers is None:  # default: the upper half of the decoder, every other layer
            layers = list(range(len(all_layers) // 2, len(all_layers), 2)) or [len(all_layers) - 1]
        layers = [i % len(all_layers) for i in layers]
        self.settings["layers"] = layers
        d = hidden_size(self.config)
        for i in layers:
            self.fusion[f"layer{i}"] = FUSIONS.build(
                fusion, d_model=d, d_memory=self.memory_dim, rank=rank, heads=heads, gate=gate
            )
            all_layers[i].register_forward_hook(self._hook(f"layer{i}"))

    @property
    def uses_memory(self) -> bool:
        return self.fusion_mode != "in_context"

    def prompt(self, question: str, passages: list[str] | None) -> str:
        """The prompt for this fusion mode: passages are written in only for in-context fusion."""
        return build_prompt(self.tokenizer, question, None if self.uses_memory else passages)

    def _hook(self, key: str):  # noqa: ANN202
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            if self._memory is None:
                return output
            hidden = output[0] if isinstance(output, tuple) else output
            memory, mask = self._memory
            if memory.shape[0] != hidden.shape[0]:  # e.g. several beams per question
                repeat = hidden.shape[0] // memory.shape[0]
                memory, mask = memory.repeat_interleave(repeat, 0), mask.repeat_interleave(repeat, 0)
            updated = hidden + self.fusion[key](hidden, memory, mask).to(hidden.dtype)
            return (updated, *output[1:]) if isinstance(output, tuple) else updated

        return hook

    # -- chunk encodings -------------------------------------------------------------------------
    @contextmanager
    def base_only(self) -> Iterator[None]:
        """Run the frozen base model: adapter off, fusion off."""
        saved, self._memory = self._memory, None
        ctx = self.model.disable_adapter() if hasattr(self.model, "disable_adapter") else nullcontext()
        try:
            with ctx:
                yield
        finally:
            self._memory = saved

    @torch.no_grad()
    def encode_chunks(self, texts: list[str]) -> list[torch.Tensor]:
        """Token states [L, d] of each chunk, cached by text: the frozen base model's own states
        (memory_source=base) or the sentence embedder's token embeddings (memory_source=embedder)."""
        keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self._cache}.items())
        self.cache_hits += len(texts) - len(missing)
        self.cache_misses += len(missing)
        if missing and self.memory_source == "embedder":
            from components.embed.encoder import load_embedder

            states = load_embedder(self.memory_embedder).encode(
                [t for _, t in missing], output_value="token_embeddings", convert_to_tensor=False
            )
            for (key, _), row in zip(missing, states, strict=True):
                self._cache[key] = row[: self.chunk_tokens].float().clone()
        elif missing:
            self.tokenizer.padding_side = "right"
            batch = self.tokenizer(
                [t for _, t in missing],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.chunk_tokens,
            )
            with self.base_only():
                base = unwrap(self.model)
                if self.is_seq2seq:
                    states = base.get_encoder()(
                        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                    ).last_hidden_state
                else:
                    out = base(**batch, output_hidden_states=True)
                    states = out.hidden_states[len(out.hidden_states) // 2]
            for (key, _), row, mask in zip(missing, states, batch["attention_mask"], strict=True):
                self._cache[key] = row[mask.bool()].float().clone()
        return [self._cache[k] for k in keys]

    def memory_for(self, passages: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenated chunk encodings per question, padded: memory [B, M, d] and mask [B, M]."""
        rows = []
        for texts in passages:
            encoded = self.encode_chunks(texts) if texts else []
            rows.append(torch.cat(encoded) if encoded else torch.zeros(1, self.memory_dim))
        width = max(r.shape[0] for r in rows)
        memory = torch.zeros(len(rows), width, rows[0].shape[1])
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, r in enumerate(rows):
            memory[i, : r.shape[0]], mask[i, : r.shape[0]] = r, bool(passages[i])
        mask[:, 0] |= ~mask.any(dim=1)  # never an all-masked row (softmax over nothing)
        return memory, mask

    @contextmanager
    def attend(self, passages: list[list[str]] | None) -> Iterator[None]:
        """Within this block, fused layers attend over the given passages."""
        if not self.uses_memory or passages is None:
            yield
            return
        self._memory = self.memory_for(passages)
        try:
            yield
        finally:
            self._memory = None

    # -- kv fusion -------------------------------------------------------------------------------
    def _attach_memory_gate(self, per: str) -> None:
        base = unwrap(self.model)
        if chunk_kv.rotary_embedding(base) is None:
            raise ValueError(
                f"kv_gate needs a rotary-position model (Llama-style); {type(base).__name__} has absolute "
                "positions (use kv_gate: none)"
            )
        self.fusion["memory_gate"] = MemoryGate(
            len(decoder_layers(base)), base.config.num_attention_heads, per
        )
        base.config._attn_implementation = ATTENTION

    def _memory_gating(self, memory: chunk_kv.KVMemory):  # noqa: ANN202
        """The gate's context for a batch with this memory (nothing to do without a gate)."""
        if "memory_gate" not in self.fusion:
            return nullcontext()
        return gating(memory.mask.shape[1], self.fusion["memory_gate"])

    def _encode_key_values(self, texts: list[str]) -> list[chunk_kv.ChunkKV]:
        with self.base_only():
            return chunk_kv.encode_chunk_kv(unwrap(self.model), self.tokenizer, texts, self.chunk_tokens)

    def use_kv_folder(self, folder: Path, disk_bytes: int) -> None:
        """Keep chunk key/values on disk too (memory-mapped, LRU under `disk_bytes`)."""
        self.kv_store.use_folder(folder, disk_bytes)

    def chunk_key_values(self, texts: list[str]) -> list[chunk_kv.ChunkKV]:
        """Each chunk's key/values from the frozen base model, through the tiers of `kv_store`."""
        before = self.kv_store.counters.computed
        found = self.kv_store.get(texts)
        computed = self.kv_store.counters.computed - before
        self.cache_misses += computed
        self.cache_hits += len(texts) - computed
        return found

    def kv_memory(self, passages: list[list[str]]) -> chunk_kv.KVMemory:
        """The key/value memory of a batch: each question's chunks, in retrieval order."""
        rows = [self.chunk_key_values(texts) if texts else [] for texts in passages]
        return chunk_kv.assemble(rows, chunk_kv.rotary_embedding(unwrap(self.model)))

    def _kv_inputs(self, memory: chunk_kv.KVMemory, batch: dict[str, Any]) -> dict[str, Any]:
        mask = batch.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(batch["input_ids"])
        return {**batch, **chunk_kv.question_inputs(memory, mask), "cache": memory.cache}

    @torch.no_grad()
    def _generate_kv(
        self,
        passages: list[list[str]],
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | None = None,
        streamer: Any = None,
        stopping_criteria: Any = None,
        **_: Any,
    ) -> torch.Tensor:
        """Greedy decoding over the chunks' key/values: only the question is prefilled. Like
        transformers' generate, it feeds a `streamer` and stops when `stopping_criteria` say so."""
        memory = self.kv_memory(passages)
        inputs = self._kv_inputs(memory, {"input_ids": input_ids, "attention_mask": attention_mask})
        if inputs["cache"] is None:
            inputs["cache"] = chunk_kv.DynamicCache(config=self.config)
        if streamer is not None:
            streamer.put(input_ids)
        step = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids", "cache")}
        done = torch.zeros(len(input_ids), dtype=torch.bool)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos_token_id
        sequences = input_ids
        with self._memory_gating(memory):
            for _ in range(max_new_tokens):
                logits = self.model(**step).logits
                token = logits[:, -1].argmax(-1)
                token = torch.where(done, torch.full_like(token, pad if pad is not None else 0), token)
                sequences = torch.cat([sequences, token[:, None]], dim=1)
                if streamer is not None:
                    streamer.put(token[:1])
                if eos_token_id is not None:
                    done |= token == eos_token_id
                stop = stopping_criteria is not None and bool(
                    torch.as_tensor(stopping_criteria(sequences, logits)).all()
                )
                if done.all() or stop:
                    break
                mask = torch.cat([step["attention_mask"], torch.ones_like(token[:, None])], dim=1)
                step = {
                    **step,
                    "input_ids": token[:, None],
                    "attention_mask": mask,
                    "position_ids": step["position_ids"][:, -1:] + 1,
                }
        if streamer is not None:
            streamer.end()
        return sequences

    # -- forward / generate ----------------------------------------------------------------------
    def forward(self, passages: list[list[str]] | None = None, **batch: Any) -> Any:
        if self.fusion_mode == "kv" and passages is not None:
            memory = self.kv_memory(passages)
            with self._memory_gating(memory):
                return self.model(**self._kv_inputs(memory, batch))
        with self.attend(passages):
            return self.model(**batch)

    def generate(self, passages: list[list[str]] | None = None, **kwargs: Any) -> torch.Tensor:
        if self.fusion_mode == "kv" and passages is not None:
            return self._generate_kv(passages, **kwargs)
        with self.attend(passages):
            return self.model.generate(**kwargs)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # -- artifact --------------------------------------------------------------------------------
    def save(self, folder: Path, retro_config: dict[str, Any]) -> None:
        """Adapter weights, fusion weights (safetensors) and every config, in one folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder, safe_serialization=True)
        if len(self.fusion):
            save_file(
                {k: v.detach().contiguous() for k, v in self.fusion.state_dict().items()},
                str(folder / FUSION_WEIGHTS),
            )
        config = {
            **retro_config,
            "fusion_settings": self.settings,
            "fusion": self.fusion_mode,
            "schema_version": ARTIFACT_SCHEMA,
        }
        (folder / ARTIFACT_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))

    def load_fusion(self, folder: Path) -> None:
        path = Path(folder) / FUSION_WEIGHTS
        if len(self.fusion):
            self.fusion.load_state_dict(load_file(str(path)))
