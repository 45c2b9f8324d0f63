"""chunk: token-aware windows over every document, with stable content-hash chunk ids."""

from __future__ import annotations

from typing import Any

import pandas as pd
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from components.config import StrictModel, parse_section
from components.data.chunking import chunk_text, load_offsets
from components.embed.encoder import resolve_embedder
from components.stages.common import Layout, load_shared, read_table, stage_main, write_json


class ChunkParams(StrictModel):
    max_tokens: int = Field(128, ge=8, description="window size in tokens of `tokenizer`")
    overlap: int = Field(24, ge=0)
    tokenizer: str = Field("embedder", description="'embedder' or any tokenizer id/path")

    @model_validator(mode="after")
    def _overlap_below_window(self) -> ChunkParams:
        if self.overlap >= self.max_tokens:
            raise ValueError("overlap must be smaller than max_tokens")
        return self


def run(params: dict[str, Any], layout: Layout) -> dict[str, Any]:
    p = parse_section(ChunkParams, params, "chunk")
    model, _ = load_shared(params)
    name = resolve_embedder(model.embedder) if p.tokenizer == "embedder" else p.tokenizer
    offsets = load_offsets(name)
    docs = read_table(layout.documents, "ingest")
    rows = []
    for doc in tqdm(docs.itertuples(), total=len(docs), desc="chunk", leave=False):
        for c in chunk_text(doc.doc_id, doc.text, offsets, p.max_tokens, p.overlap):
            rows.append(
                {
                    "version": doc.version,
                    "chunk_id": c.chunk_id,
                    "doc_id": c.doc_id,
                    "position": c.position,
                    "text": c.text,
                }
            )
    chunks = pd.DataFrame(rows, columns=["version", "chunk_id", "doc_id", "position", "text"])
    chunks.to_parquet(layout.chunks, index=False)
    metrics = {
        "chunks": len(chunks),
        "unique_chunks": int(chunks["chunk_id"].nunique()),
        "mean_chunks_per_doc": round(len(chunks) / max(1, len(docs)), 3),
    }
    write_json(layout.metrics / "chunk.json", metrics)
    return metrics


def main() -> None:
    stage_main("chunk", run)


if __name__ == "__main__":
    main()
