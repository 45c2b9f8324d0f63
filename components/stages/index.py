"""index: the vector store (and BM25) over the newest corpus version, as a new index version.

Made from a copy of the previous version when embedder, store and chunking are unchanged, else
built anew, and swapped in only when complete (components/stores/versions.py). Fusion weights are
fitted on validation questions (`retrieval.fusion: tuned`); with `kv` or `gated` fusion the chunk
key/value store follows the index (`index.chunk_kv`, components/adapters/kv_index.py).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

from components.adapters.kv_index import index_chunk_kv
from components.core.artifacts import read_table, versions_in
from components.core.params import PipelineParams
from components.core.paths import Paths
from components.data.chunking import read_chunks
from components.embed.choice import embedder_in_use, embedder_record
from components.embed.table import EmbeddingTable
from components.stages.entry import stage_main
from components.stores.fusion_fit import FusionTask
from components.stores.manifest import IndexManifest
from components.stores.versions import (
    VersionInput,
    build_version,
    chunk_payloads,
    plan_version,
    require_vectors,
)


def run(params: PipelineParams, paths: Paths) -> dict[str, Any]:
    """Run the index stage: build the new index version from the embeddings."""
    p, retrieval = params.index, params.retrieval
    chunks = read_chunks(paths.chunks)
    latest = versions_in(chunks)[-1]
    part = chunks[chunks["version"] == latest]
    vectors = EmbeddingTable.open(paths.embeddings)
    chunk_ids = part["chunk_id"].tolist()
    require_vectors(chunk_ids, vectors, latest)
    embedder, embedder_path = embedder_in_use(paths.embeddings, params.model.embedder)
    settings = {
        "embedder": embedder,  # its identity: a fine-tuned embedder is named by its hash
        **embedder_record(paths.embeddings),  # a fine-tuned embedder's hash; the engine
        "dim": vectors.dim,
        "store": p.store,
        "store_params": p.store_params,
        "retrieval_mode": retrieval.mode,
        "chunking": params.chunk.model_dump(),
    }
    qa, model = read_table(paths.qa, "ingest"), params.model
    fusion = FusionTask.of(qa, part, latest, retrieval, model.embedder, model.seed)
    plan = plan_version(IndexManifest.read_if_current(paths.index), settings, chunk_ids, params.ingest.source)
    if plan.mode == "noop" and fusion.changed_since(plan.parent.fusion):
        plan = replace(plan, mode="incremental", reason="fusion settings changed")
    if plan.mode == "noop":
        return {**plan.parent.to_dict(), **index_chunk_kv(params, paths.chunk_kv, chunks, part, plan.parent)}
    documents = read_table(paths.documents, "ingest")
    data = VersionInput(
        chunk_ids, part["text"].tolist(), chunk_payloads(part, chunks, documents), vectors, retrieval.rrf_k,
        latest, params.ingest.source, int(part["doc_id"].nunique()), embedder_path,
    )  # fmt: skip
    fill = None
    if p.sharding.active:
        from flows.sharded_index import upsert_sharded  # a Prefect flow over a Dask or Ray cluster

        fill = partial(upsert_sharded, p=p.sharding)
    manifest = build_version(plan, data, paths.index, fill, p.sharding.shards, fusion)
    return {**manifest.to_dict(), **index_chunk_kv(params, paths.chunk_kv, chunks, part, plan.parent)}


def main() -> None:
    """Command-line entry of the index stage (`python -m components.stages.index`)."""
    stage_main("index", run)


if __name__ == "__main__":
    main()
