"""Several adapters on one base model: peft's named adapters, answered in mixed batches.

A per-domain service (`<name>-adapter-<domain>`, components/serving) loads the base model once
and each registered adapter beside it, as vLLM and LoRAX do. A batch holding questions for
different adapters runs as one call: LoRA adapters through peft's `adapter_names` (each row its
own adapter), other methods (IA3, ...) one group per adapter. In-context fusion only: kv and
gated adapters carry per-adapter gates and chunk key/values that one base model cannot share.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from components.adapters.builder import current_fusion_settings, load_retro_model
from components.adapters.generation import generate
from components.adapters.peft_adapter import read_artifact_config
from components.adapters.retro_model import RetroModel

SlotItem = tuple[str | None, str, list[str]]
"""(adapter slot, prompt, passages): one row of a generation batch."""


def slot_name(label: str) -> str:
    """A peft adapter name for `label` (module names may not hold dots)."""
    return label.replace(".", "_")


class AdapterSet:
    """One base model and the adapters loaded on it, each under its own slot name."""

    def __init__(self, prepare: Any = None) -> None:
        """`prepare(model)` runs once on the model when the first adapter loads (int8 decode)."""
        self.model: RetroModel | None = None
        self.configs: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()  # one generation at a time on the shared model
        self.prepare = prepare

    def add(self, slot: str, folder: Path) -> tuple[RetroModel, dict[str, Any]]:
        """Load the adapter artifact in `folder` as `slot`; ValueError for one that cannot share
        the base model (another base, or kv/gated fusion)."""
        folder = Path(folder)
        config = read_artifact_config(folder)
        fusion = current_fusion_settings(folder, config.get("fusion_settings", {})).get(
            "fusion", "in_context"
        )
        if fusion != "in_context":
            raise ValueError(f"{folder} uses {fusion} fusion; several adapters share a model in_context only")
        with self.lock:
            if self.model is None:
                self.model = load_retro_model(folder, adapter_name=slot)
                if self.prepare is not None:
                    self.prepare(self.model)
            elif slot not in self.configs:
                base = next(iter(self.configs.values()))["base_model"]
                if config["base_model"] != base:
                    raise ValueError(f"{folder} adapts {config['base_model']}, not the served base {base}")
                self.model.model.load_adapter(str(folder), adapter_name=slot)
            self.configs[slot] = config
        return self.model, config

    def remove(self, slot: str) -> None:
        """Unload `slot` (never the last adapter: the model needs one)."""
        with self.lock:
            if slot in self.configs and len(self.configs) > 1:
                self.model.model.delete_adapter(slot)
                del self.configs[slot]

    @property
    def slots(self) -> list[str]:
        """Names of the loaded adapters, one per domain."""
        return list(self.configs)

    def generate_slots(
        self, items: list[tuple[str | None, str, list[str]]], max_new_tokens: int
    ) -> list[str]:
        """Greedy answers for (slot, prompt, passages) items, each with its slot's adapter."""
        with self.lock:
            if all(self.configs[s].get("method", "lora").lower() == "lora" for s, _, _ in items):
                prompts, names = [p for _, p, _ in items], [s for s, _, _ in items]
                return generate(self.model, prompts, max_new_tokens, len(items), adapter_names=names)
            answers: list[str | None] = [None] * len(items)
            for slot in dict.fromkeys(s for s, _, _ in items):
                rows = [i for i, item in enumerate(items) if item[0] == slot]
                self.model.model.set_adapter(slot)
                texts = generate(self.model, [items[i][1] for i in rows], max_new_tokens, len(rows))
                for i, text in zip(rows, texts, strict=True):
                    answers[i] = text
            return answers
