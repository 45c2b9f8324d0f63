"""Load a registered adapter/index pair and answer questions with sources."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from components.adapters.base_model import load_base_model
from components.adapters.generation import generate
from components.adapters.peft_adapter import load_artifact, read_artifact_config
from components.adapters.prompting import build_prompt
from components.stores.retriever import Retriever


class Answerer:
    """A base model with its adapter, a retriever over the linked index, and their versions."""

    def __init__(
        self,
        adapter_dir: Path,
        index_dir: Path,
        adapter_version: str = "local",
        index_version: str = "local",
    ) -> None:
        config = read_artifact_config(adapter_dir)
        base, self.tokenizer = load_base_model(config["base_model"])
        self.model = load_artifact(adapter_dir, base)
        self.retriever = Retriever.load(index_dir)
        self.k = int(config.get("retrieval", {}).get("k", 3))
        self.adapter_version, self.index_version = adapter_version, index_version

    @classmethod
    def from_registry(cls, tracking_uri: str, alias: str, cache: Path | None = None) -> Answerer:
        from components.registry import mlflow_registry as reg

        client = reg.configure(tracking_uri)
        pair = reg.download_pair(client, alias, cache or Path(tempfile.mkdtemp(prefix="retro-")))
        return cls(pair.adapter_dir, pair.index_dir, pair.adapter_version, pair.index_version)

    def answer(self, question: str, k: int | None = None, max_new_tokens: int = 24) -> dict[str, Any]:
        hits = self.retriever.retrieve([question], k or self.k)[0]
        prompt = build_prompt(self.tokenizer, question, [h.payload["text"] for h in hits])
        text = generate(self.model, self.tokenizer, [prompt], max_new_tokens)[0]
        return {
            "answer": text,
            "sources": [
                {"chunk_id": h.id, "doc_id": h.payload.get("doc_id"), "score": h.score} for h in hits
            ],
            "adapter_version": self.adapter_version,
            "index_version": self.index_version,
        }
