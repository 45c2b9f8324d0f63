"""index: build the vector store (and BM25) over the newest corpus version; write a manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
from typing import Any

import pandas as pd
from pydantic import Field

from components.config import StrictModel, parse_section
from components.stages.common import (
    Layout,
    ModelParams,
    RetrievalParams,
    load_shared,
    read_table,
    stage_main,
    versions_in,
    write_json,
)
from components.stages.embed import load_embeddings
from components.stores.retriever import Retriever


class IndexParams(StrictModel):
    store: str = "faiss"
    store_params: dict[str, Any] = Field(default_factory=lambda: {"factory": "Flat"})


def content_hash(chunk_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(chunk_ids)).encode()).hexdigest()[:16]


def version_retriever(
    layout: Layout,
    version: str,
    model: ModelParams,
    retrieval: RetrievalParams,
    index: IndexParams,
    chunks: pd.DataFrame | None = None,
) -> Retriever:
    """A retriever over one corpus version's chunks, built in memory from the embed stage output."""
    chunks = read_table(layout.chunks, "chunk") if chunks is None else chunks
    ids, vectors = load_embeddings(layout)
    row_of = {cid: i for i, cid in enumerate(ids)}
    part = chunks[chunks["version"] == version]
    payloads = [
        {"doc_id": r.doc_id, "chunk_id": r.chunk_id, "version": r.version, "position": r.position}
        for r in part.itertuples()
    ]
    return Retriever.build(
        part["chunk_id"].tolist(),
        part["text"].tolist(),
        vectors[[row_of[c] for c in part["chunk_id"]]],
        payloads,
        model.embedder,
        retrieval.mode,
        retrieval.rrf_k,
        index.store,
        index.store_params,
    )


def run(params: dict[str, Any], layout: Layout) -> dict[str, Any]:
    p = parse_section(IndexParams, params, "index")
    model, retrieval = load_shared(params)
    chunks = read_table(layout.chunks, "chunk")
    latest = versions_in(chunks)[-1]
    retriever = version_retriever(layout, latest, model, retrieval, p, chunks)
    part = chunks[chunks["version"] == latest]
    staging = layout.index.with_name(layout.index.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    retriever.save(staging)
    manifest = {
        "embedder": model.embedder,
        "dim": retriever.store.dim,
        "store": p.store,
        "store_params": p.store_params,
        "retrieval_mode": retrieval.mode,
        "chunking": params.get("chunk", {}),
        "corpus_source": params.get("ingest", {}).get("source"),
        "corpus_version": latest,
        "count": retriever.store.count(),
        "documents": int(part["doc_id"].nunique()),
        "content_hash": content_hash(part["chunk_id"].tolist()),
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    shutil.rmtree(layout.index, ignore_errors=True)
    staging.rename(layout.index)
    write_json(layout.metrics / "index.json", {k: manifest[k] for k in ("count", "documents", "dim")})
    return manifest


def main() -> None:
    stage_main("index", run)


if __name__ == "__main__":
    main()
