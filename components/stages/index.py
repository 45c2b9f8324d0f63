"""index: the vector store (and BM25) over the newest corpus version, as a new index version.

When the previous version on disk was built with the same embedder, store and chunking, the new
version is made from a copy of it: removed chunks are deleted and only new chunks are upserted.
The new version is assembled beside the old one and swapped in only when complete, so a failed
update leaves the previous version intact. Its manifest records the parent version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from components.config import StrictModel, parse_section
from components.sharding import ShardingParams
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

log = logging.getLogger(__name__)


class IndexParams(StrictModel):
    store: str = "faiss"
    store_params: dict[str, Any] = Field(default_factory=lambda: {"factory": "Flat"})
    sharding: ShardingParams = ShardingParams()


def content_hash(chunk_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(chunk_ids)).encode()).hexdigest()[:16]


def chunk_payloads(part: pd.DataFrame, chunks: pd.DataFrame, documents: pd.DataFrame | None) -> list[dict]:
    """Payloads of one version's chunks: ids, position, the corpus version the chunk first appeared
    in (stable across versions, so an unchanged chunk keeps its payload), its domain (metadata
    `domain`, else the document's top folder) and the document's other scalar metadata fields."""
    order = {v: i for i, v in enumerate(versions_in(chunks))}
    first_seen = chunks.assign(rank=chunks["version"].map(order)).sort_values("rank")
    first_version = first_seen.drop_duplicates("chunk_id").set_index("chunk_id")["version"].to_dict()
    metadata: dict[str, dict] = {}
    if documents is not None and "metadata" in documents:
        version = part["version"].iloc[0] if len(part) else None
        for row in documents[documents["version"] == version].itertuples():
            raw = json.loads(row.metadata) if isinstance(row.metadata, str) else (row.metadata or {})
            metadata[row.doc_id] = {k: v for k, v in raw.items() if isinstance(v, (str, int, float, bool))}
    payloads = []
    for r in part.itertuples():
        extra = metadata.get(r.doc_id, {})
        domain = extra.get("domain", r.doc_id.split("/", 1)[0] if "/" in r.doc_id else "")
        payloads.append(
            {
                **extra,
                "domain": domain,
                "doc_id": r.doc_id,
                "chunk_id": r.chunk_id,
                "version": first_version[r.chunk_id],
                "position": int(r.position),
            }
        )
    return payloads


def version_retriever(
    layout: Layout,
    version: str,
    model: ModelParams,
    retrieval: RetrievalParams,
    index: IndexParams,
    chunks: pd.DataFrame | None = None,
) -> Retriever:
    """A transient in-memory retriever over one corpus version's chunks (training, evaluation).

    When the index stage's current version holds exactly these chunks it is opened instead (the
    newest version costs no build). Otherwise it uses FAISS with the configured factory, or exact
    FAISS when the index lives on a server, so that building one never creates server collections.
    """
    chunks = read_table(layout.chunks, "chunk") if chunks is None else chunks
    part = chunks[chunks["version"] == version]
    built = previous_manifest(layout)
    if (
        built is not None
        and built.get("content_hash") == content_hash(part["chunk_id"].tolist())
        and built.get("embedder") == model.embedder
        and built.get("retrieval_mode") == retrieval.mode
    ):  # the index stage already holds exactly this version: open it instead of building
        return Retriever.load(layout.index)
    ids, vectors = load_embeddings(layout)
    row_of = {cid: i for i, cid in enumerate(ids)}
    store, store_params = (index.store, index.store_params) if index.store == "faiss" else ("faiss", {})
    return Retriever.build(
        part["chunk_id"].tolist(),
        part["text"].tolist(),
        vectors[[row_of[c] for c in part["chunk_id"]]],
        chunk_payloads(part, chunks, None),
        model.embedder,
        retrieval.mode,
        retrieval.rrf_k,
        store,
        store_params,
    )


COMPATIBILITY_KEYS = ("embedder", "dim", "store", "store_params", "retrieval_mode", "chunking")
"""Manifest fields that must match for a new version to be built as an update of the previous one."""


def previous_manifest(layout: Layout) -> dict[str, Any] | None:
    """The manifest of the index version on disk, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((layout.index / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def _swap_in(staging: Path, target: Path) -> None:
    """Replace `target` by `staging` with two renames, so a reader sees one or the other."""
    retired = target.with_name(target.name + ".old")
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)


def sharded_fill(sharding: ShardingParams) -> Callable[..., None] | None:
    """The sharded build of a new store when `index.sharding` asks for one (full builds only:
    an incremental update adds just the new chunks)."""
    if not sharding.active:
        return None
    from components.stores.sharded_build import upsert_sharded  # imports Prefect and the cluster

    return partial(upsert_sharded, p=sharding)


def run(params: dict[str, Any], layout: Layout) -> dict[str, Any]:
    p = parse_section(IndexParams, params, "index")
    model, retrieval = load_shared(params)
    chunks = read_table(layout.chunks, "chunk")
    latest = versions_in(chunks)[-1]
    part = chunks[chunks["version"] == latest]
    ids, vectors = load_embeddings(layout)
    row_of = {cid: i for i, cid in enumerate(ids)}
    chunk_ids = part["chunk_id"].tolist()
    missing = [c for c in chunk_ids if c not in row_of]
    if missing:
        raise ValueError(f"{len(missing)} chunks of {latest} have no embedding (e.g. {missing[0]})")
    settings = {
        "embedder": model.embedder,
        "dim": int(vectors.shape[1]),
        "store": p.store,
        "store_params": p.store_params,
        "retrieval_mode": retrieval.mode,
        "chunking": params.get("chunk", {}),
    }
    digest = content_hash(chunk_ids)
    parent = previous_manifest(layout)
    compatible = parent is not None and all(parent.get(k) == settings[k] for k in COMPATIBILITY_KEYS)
    if compatible and parent["content_hash"] == digest:
        log.info("index %s already holds exactly these chunks; nothing to do", digest)
        return parent

    def vector_of(wanted: list[str]) -> np.ndarray:
        return vectors[[row_of[c] for c in wanted]]

    staging = layout.index.with_name(layout.index.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    name = f"retro_{digest}"
    documents = pd.read_parquet(layout.documents) if layout.documents.exists() else None
    texts, payloads = part["text"].tolist(), chunk_payloads(part, chunks, documents)
    try:
        if compatible:
            previous = Retriever.load(layout.index)
            try:
                retriever, change = previous.update(staging, name, chunk_ids, texts, payloads, vector_of)
            finally:
                previous.close()
            mode = "incremental"
        else:
            if parent is not None:
                changed = [k for k in COMPATIBILITY_KEYS if parent.get(k) != settings[k]]
                log.info("full rebuild: %s changed since the previous version", ", ".join(changed))
            retriever = Retriever.build(
                chunk_ids,
                texts,
                vector_of(chunk_ids),
                payloads,
                model.embedder,
                retrieval.mode,
                retrieval.rrf_k,
                p.store,
                p.store_params,
                folder=staging,
                name=name,
                fill=sharded_fill(p.sharding),
            )
            change, mode = {"added": len(chunk_ids), "removed": 0, "kept": 0}, "full"
            if p.sharding.active and len(chunk_ids) > 1:
                change["shards"] = min(p.sharding.shards, len(chunk_ids))
        retriever.save(staging)
        manifest = {
            **settings,
            "index_version": int(parent.get("index_version", 0)) + 1 if parent else 1,
            "parent": {k: parent.get(k) for k in ("index_version", "content_hash")} if parent else None,
            "update": {"mode": mode, **change},
            "store_info": retriever.store.info(),
            "corpus_source": params.get("ingest", {}).get("source"),
            "corpus_version": latest,
            "count": retriever.store.count(),
            "documents": int(part["doc_id"].nunique()),
            "content_hash": digest,
        }
        retriever.close()
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_in(staging, layout.index)
    summary = {k: manifest[k] for k in ("count", "documents", "dim", "index_version")}
    write_json(layout.metrics / "index.json", {**summary, **manifest["update"]})
    return manifest


def main() -> None:
    stage_main("index", run)


if __name__ == "__main__":
    main()
