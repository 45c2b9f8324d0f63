"""Load a registered adapter/index pair and answer questions with sources."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from components.adapters.builder import load_retro_model
from components.adapters.generation import generate
from components.adapters.retro_model import rerank_hits
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
        self.model = load_retro_model(adapter_dir)
        self.retriever = Retriever.load(index_dir)
        self.k = int(self.model.artifact_config.get("retrieval", {}).get("k", 3))
        self.adapter_version, self.index_version = adapter_version, index_version

    @classmethod
    def from_registry(cls, tracking_uri: str, alias: str, cache: Path | None = None) -> Answerer:
        from components.registry import mlflow_registry as reg

        client = reg.configure(tracking_uri)
        pair = reg.download_pair(client, alias, cache or Path(tempfile.mkdtemp(prefix="retro-")))
        return cls(pair.adapter_dir, pair.index_dir, pair.adapter_version, pair.index_version)

    def answer(self, question: str, k: int | None = None, max_new_tokens: int = 24) -> dict[str, Any]:
        k = k or self.k
        first_stage = self.retriever.retrieve([question], self.model.first_stage_depth(k))
        hits = rerank_hits(self.model, [question], first_stage, k)[0]
        texts = [h.payload["text"] for h in hits]
        prompt = self.model.prompt(question, texts)
        text = generate(self.model, [prompt], max_new_tokens, passages=[texts])[0]
        return {
            "answer": text,
            "sources": [
                {"chunk_id": h.id, "doc_id": h.payload.get("doc_id"), "score": h.score} for h in hits
            ],
            "adapter_version": self.adapter_version,
            "index_version": self.index_version,
        }
