"""Index versions: a new version made from its parent (copy-on-write) or built anew, swapped in
whole, and transient retrievers over any one corpus version's chunks.

The new version is assembled beside the old one and swapped in only when complete, so a failed
update leaves the previous version intact.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from components.core.artifacts import staged_swap, versions_in
from components.data.domains import domain_of
from components.embed.choice import backend_in_use, embedder_in_use
from components.embed.table import EmbeddingTable
from components.stores.manifest import IndexManifest
from components.stores.retriever import Retriever

log = logging.getLogger(__name__)

Fill = Callable[..., None]
Tune = Callable[[Retriever, Path], dict[str, Any]]


def chunk_set_hash(chunk_ids: list[str]) -> str:
    """Identifies a set of chunks (order does not matter): the index version's content hash."""
    return hashlib.sha256("\n".join(sorted(chunk_ids)).encode()).hexdigest()[:16]


def chunk_payloads(part: pd.DataFrame, chunks: pd.DataFrame, documents: pd.DataFrame | None) -> list[dict]:
    """Payloads of one version's chunks: ids, position, the corpus version the chunk first appeared
    in (stable across versions, so an unchanged chunk keeps its payload), its domain (metadata
    `domain`, else the document's top folder), where it comes from (source file, page, section,
    character span: what answers cite) and the document's other scalar metadata fields."""
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
        domain = domain_of(r.doc_id, extra)
        payloads.append(
            {
                **extra,
                "domain": domain,
                "doc_id": r.doc_id,
                "chunk_id": r.chunk_id,
                "version": first_version[r.chunk_id],
                "position": int(r.position),
                "section": str(getattr(r, "section", "") or ""),
                "source": str(getattr(r, "source", "") or ""),
                "page": int(getattr(r, "page", 0) or 0),
                "start": int(getattr(r, "start", 0) or 0),
                "end": int(getattr(r, "end", 0) or 0),
            }
        )
    return payloads


@dataclass
class VersionPlan:
    """What the index stage does with the newest corpus version, and why."""

    mode: str  # noop | incremental | full
    reason: str
    settings: dict[str, Any]
    content_hash: str
    parent: IndexManifest | None


def plan_version(
    parent: IndexManifest | None,
    settings: dict[str, Any],
    chunk_ids: list[str],
    corpus_source: str | None = None,
) -> VersionPlan:
    """noop when the parent holds exactly these chunks with the same settings, incremental when only
    the chunks differ, full otherwise (no parent, or a setting changed). Another corpus source
    starts a new lineage: a full build without a parent."""
    digest = chunk_set_hash(chunk_ids)
    if parent is None:
        return VersionPlan("full", "no previous index version", settings, digest, None)
    if corpus_source is not None and parent.corpus_source not in (None, corpus_source):
        reason = f"corpus source {corpus_source!r} is not {parent.corpus_source!r}: a new index lineage"
        return VersionPlan("full", reason, settings, digest, None)
    changed = parent.changed_settings(settings)
    if changed:
        return VersionPlan(
            "full", f"{', '.join(changed)} changed since the previous version", settings, digest, parent
        )
    if parent.content_hash == digest:
        return VersionPlan(
            "noop", f"index {digest} already holds exactly these chunks", settings, digest, parent
        )
    return VersionPlan("incremental", "chunks changed; same settings", settings, digest, parent)


@dataclass
class VersionInput:
    """The newest corpus version's chunks, their payloads and where their vectors are."""

    chunk_ids: list[str]
    texts: list[str]
    payloads: list[dict]
    vectors: EmbeddingTable
    rrf_k: int
    corpus_version: str
    corpus_source: str | None
    documents: int
    embedder_path: str | None = None  # what encode() loads, when not the embedder's name (fine-tuned)


def build_version(
    plan: VersionPlan,
    data: VersionInput,
    index_folder: Path,
    fill: Fill | None = None,
    shards: int = 0,
    tune: Tune | None = None,
) -> IndexManifest:
    """Make the planned index version in a staging folder and swap it in; returns its manifest.

    `fill(store, ids, vectors, payloads)` replaces the single upsert of a full build: a sharded
    build over `shards` shard tasks. `tune(retriever, staging)` fits the new version's retrieval
    and returns manifest fields (`fusion` with its `weights`, `rerank`); without it the weights
    stay as they were.
    """
    s, parent = plan.settings, plan.parent
    name = f"retro_{plan.content_hash}"
    with staged_swap(index_folder) as staging:
        if plan.mode == "incremental":
            previous = Retriever.load(index_folder)
            try:
                retriever, change = previous.update(
                    staging, name, data.chunk_ids, data.texts, data.payloads, data.vectors.rows
                )
            finally:
                previous.close()
        else:
            if parent is not None or plan.reason != "no previous index version":
                log.info("full rebuild: %s", plan.reason)
            retriever = Retriever.build(
                data.chunk_ids,
                data.texts,
                data.vectors.rows(data.chunk_ids),
                data.payloads,
                data.embedder_path or s["embedder"],
                s["retrieval_mode"],
                data.rrf_k,
                s["store"],
                s["store_params"],
                folder=staging,
                name=name,
                fill=fill,
            )
            change = {"added": len(data.chunk_ids), "removed": 0, "kept": 0}
            if shards > 1 and len(data.chunk_ids) > 1:
                change["shards"] = min(shards, len(data.chunk_ids))
        retriever.embed_backend = s.get("embed_backend", "torch")
        fitted = tune(retriever, staging) if tune is not None else {}
        fitted.setdefault("fusion", {"weights": retriever.weights, "tuned": False})
        retriever.weights = dict(fitted["fusion"]["weights"])
        retriever.save(staging)
        manifest = IndexManifest(
            **s,
            index_version=parent.index_version + 1 if parent else 1,
            parent={"index_version": parent.index_version, "content_hash": parent.content_hash}
            if parent
            else None,
            update={"mode": plan.mode, **change},
            store_info=retriever.store.info(),
            corpus_source=data.corpus_source,
            corpus_version=data.corpus_version,
            count=retriever.store.count(),
            documents=data.documents,
            content_hash=plan.content_hash,
            **fitted,
        )
        retriever.close()
        manifest.write(staging)
    return manifest


def version_retriever(
    index_folder: Path,
    embeddings_folder: Path,
    chunks: pd.DataFrame,
    version: str,
    embedder: str,
    mode: str,
    rrf_k: int,
    store: str,
    store_params: dict[str, Any],
) -> Retriever:
    """A transient in-memory retriever over one corpus version's chunks (training, evaluation),
    with the embedder the embed stage used (`embedder` unless it fine-tuned one).

    When the index's current version holds exactly these chunks it is opened instead (the newest
    version costs no build). Otherwise it uses FAISS with the configured factory, or exact FAISS
    when the index lives on a server, so that building one never creates server collections,
    and fuses with the current version's weights.
    """
    part = chunks[chunks["version"] == version]
    built = IndexManifest.read_if_current(index_folder)
    embedder, encoder_name = embedder_in_use(embeddings_folder, embedder)  # a fine-tuned one, if used
    if (
        built is not None
        and built.content_hash == chunk_set_hash(part["chunk_id"].tolist())
        and built.embedder == embedder
        and built.retrieval_mode == mode
    ):  # the index stage already holds exactly this version: open it instead of building
        return Retriever.load(index_folder)
    vectors = EmbeddingTable.open(embeddings_folder)
    local_store, local_params = (store, store_params) if store == "faiss" else ("faiss", {})
    retriever = Retriever.build(
        part["chunk_id"].tolist(),
        part["text"].tolist(),
        vectors.rows(part["chunk_id"].tolist()),
        chunk_payloads(part, chunks, None),
        encoder_name,
        mode,
        rrf_k,
        local_store,
        local_params,
    )
    retriever.embed_backend = backend_in_use(embeddings_folder)
    if built is not None and built.fusion.get("weights"):  # fuse as the current index version does
        retriever.weights = dict(built.fusion["weights"])
    return retriever


def require_vectors(chunk_ids: list[str], vectors: EmbeddingTable, version: str) -> None:
    """Raise a clear error when some chunks of `version` have no vector (embed did not run on them)."""
    missing = [c for c in chunk_ids if c not in vectors]
    if missing:
        raise ValueError(f"{len(missing)} chunks of {version} have no embedding (e.g. {missing[0]})")
