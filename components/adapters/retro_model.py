"""RetroModel: a base model with a PEFT adapter and a retrieval fusion mode, saved as one artifact.

Fusion modes:
- `in_context`: retrieved passages are written into the prompt (no extra modules).
- `kv`: each retrieved chunk's own key/values (the frozen base model's, encoded once per chunk)
  are put before the question, which reads them through the model's own attention
  (components/adapters/chunk_kv.py); only the question and answer are run through the adapter.
- `gated`: `kv` with a zero-initialised tanh gate on the attention over the chunks, per layer or
  per head (components/adapters/memory_gate.py): a fresh adapter is the base model without
  retrieval, and training opens the gate as far as the chunks help.
"""

from __future__ import annotations

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
from components.adapters.kv_store import KVStore, store_model_id
from components.adapters.memory_gate import ATTENTION, MemoryGate, gating
from components.adapters.peft_adapter import ARTIFACT_CONFIG, ARTIFACT_SCHEMA
from components.adapters.precision import model_device
from components.adapters.prompting import build_prompt

FUSION_MODES = ("in_context", "kv", "gated")
MEMORY_GATES = ("layer", "head")
FUSION_WEIGHTS = "fusion.safetensors"
# where each family keeps its decoder layers (a dotted path on the unwrapped transformers model)
DECODER_LAYERS = ("model.layers", "transformer.h", "decoder.block", "model.decoder.layers", "gpt_neox.layers")


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder's transformer layers, found through the wrappers of peft and transformers."""
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


class RetroModel(nn.Module):
    """Adapter-wrapped language model that reads retrieved chunks in its prompt or as key/values."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        fusion: str = "in_context",
        gate: str = "layer",
        chunk_tokens: int = 256,
        chunk_kv_dtype: str = "auto",
        gate_lr: float = 0.2,
    ) -> None:
        super().__init__()
        if fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, got {fusion!r}")
        if gate not in MEMORY_GATES:
            raise ValueError(f"gate must be one of {MEMORY_GATES}, got {gate!r}")
        self.model, self.tokenizer, self.fusion_mode = model, tokenizer, fusion
        self.config = unwrap(model).config
        self.is_seq2seq = bool(getattr(self.config, "is_encoder_decoder", False))
        # causal LMs of transformers that can project only the last positions to the vocabulary
        forward_args = signature(unwrap(model).forward).parameters
        self.keeps_logits = not self.is_seq2seq and "logits_to_keep" in forward_args
        self.chunk_tokens = chunk_tokens
        self.gate_lr = gate_lr
        self.settings = {
            "gate_lr": gate_lr,
            "fusion": fusion,
            "gate": gate,
            "chunk_tokens": chunk_tokens,
            "chunk_kv_dtype": chunk_kv_dtype,
        }
        self.fusion = nn.ModuleDict()
        self.artifact_config: dict[str, Any] = {}  # set when loaded from an artifact
        dtype = next(unwrap(model).parameters()).dtype
        # RAM only until use_kv_folder adds the disk tier
        self.kv_store = KVStore(
            store_model_id(self.config), chunk_tokens, self._encode_key_values, chunk_kv_dtype, dtype
        )
        if self.uses_memory:
            chunk_kv.check_family(unwrap(model), fusion)
        if fusion == "gated":
            self._attach_memory_gate(gate)

    @property
    def uses_memory(self) -> bool:
        """Whether retrieved chunks are read as key/values (kv, gated) rather than in the prompt."""
        return self.fusion_mode != "in_context"

    def prompt(self, question: str, passages: list[str] | None) -> str:
        """The prompt for this fusion mode: passages are written in only for in-context fusion."""
        return build_prompt(self.tokenizer, question, None if self.uses_memory else passages)

    @contextmanager
    def base_only(self) -> Iterator[None]:
        """Run the frozen base model: adapter off (chunk key/values are the base model's anyway)."""
        ctx = self.model.disable_adapter() if hasattr(self.model, "disable_adapter") else nullcontext()
        with ctx:
            yield

    # -- kv fusion -------------------------------------------------------------------------------
    def _attach_memory_gate(self, per: str) -> None:
        base = unwrap(self.model)
        if chunk_kv.rotary_embedding(base) is None:
            raise ValueError(
                f"fusion gated needs a rotary-position model (Llama-style); {type(base).__name__} has "
                "absolute positions, so a closed gate cannot give the model without retrieval (use kv)"
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
        return self.kv_store.get(texts)

    def kv_memory(self, passages: list[list[str]]) -> chunk_kv.KVMemory:
        """The key/value memory of a batch: each question's chunks, in retrieval order."""
        device = model_device(self.model)
        rows = [[kv.to(device) for kv in self.chunk_key_values(texts)] if texts else [] for texts in passages]
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
        last_only = {"logits_to_keep": 1} if self.keeps_logits else {}
        done = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos_token_id
        sequences = input_ids
        with self._memory_gating(memory):
            for _ in range(max_new_tokens):
                # only the last position's logits: the vocabulary projection of the whole question
                # would cost more than its attention over the chunks
                logits = self.model(**step, **last_only).logits
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
    def _on_device(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Tensor inputs moved to where the base model's weights are (a no-op on the CPU)."""
        device = model_device(self.model)
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}

    def forward(self, passages: list[list[str]] | None = None, **batch: Any) -> Any:
        """The base model's forward pass, reading the passages' key/values in `kv` and `gated` fusion."""
        batch = self._on_device(batch)
        if self.uses_memory and passages is not None:
            memory = self.kv_memory(passages)
            with self._memory_gating(memory):
                return self.model(**self._kv_inputs(memory, batch))
        return self.model(**batch)

    def generate(self, passages: list[list[str]] | None = None, **kwargs: Any) -> torch.Tensor:
        """Generate from the batch, reading the passages' key/values in `kv` and `gated` fusion."""
        kwargs = self._on_device(kwargs)
        if self.uses_memory and passages is not None:
            return self._generate_kv(passages, **kwargs)
        return self.model.generate(**kwargs)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates: the adapter's and the fusion layers'."""
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer groups: the adapter at `lr`, the memory gate at its own `gate_lr` (a gate that
        starts closed at zero would otherwise open by at most lr per Adam step, about 0.04 in 40
        steps at LoRA's 1e-3: the chunks would stay unread)."""
        gate = [p for p in self.fusion.parameters() if p.requires_grad]
        gate_ids = {id(p) for p in gate}
        groups = [{"params": [p for p in self.trainable_parameters() if id(p) not in gate_ids], "lr": lr}]
        if gate:
            groups.append({"params": gate, "lr": self.gate_lr})
        return [g for g in groups if g["params"]]

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
        """Load the fusion layers' weights saved beside the adapter in `folder`."""
        path = Path(folder) / FUSION_WEIGHTS
        if len(self.fusion):
            self.fusion.load_state_dict(load_file(str(path)))
