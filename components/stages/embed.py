"""embed: encode each unique chunk once with the sentence-transformers embedder.

The embedder is the configured one, or a copy fine-tuned on the corpus's train questions once
per corpus lineage (`retrieval.finetune`, components/embed/choice.py). Vectors of chunks seen in
an earlier run (same embedder, same chunk id, which hashes the text) are reused, so a new corpus
version costs only its new or changed chunks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from components.core.params import PipelineParams
from components.core.paths import Paths
from components.data.chunking import read_chunks
from components.embed.choice import embedder_for, engine_identity
from components.embed.encoder import encode
from components.embed.onnx_backend import backend_name
from components.embed.table import EmbeddingTable
from components.stages.entry import stage_main


def run(params: PipelineParams, paths: Paths) -> dict[str, Any]:
    """Run the embed stage: embed the chunks that changed."""
    p, every = params.embed, read_chunks(paths.chunks)
    chosen = embedder_for(params, paths, every)
    embedder, chunks = chosen.name, every.drop_duplicates("chunk_id")
    backend = backend_name(p.backend, p.quantize)
    identity = engine_identity(chosen.identity, backend)
    cache = EmbeddingTable.reusable(paths.embeddings, identity)
    missing = chunks[~chunks["chunk_id"].isin(cache.keys())]
    texts = missing["text"].tolist()
    if p.sharding.active:
        from flows.sharded_embed import encode_sharded  # a Prefect flow over a Dask or Ray cluster

        fresh = encode_sharded(texts, embedder, p.batch_size, p.sharding, backend)
    else:
        fresh = encode(texts, embedder, p.batch_size, progress=len(missing) > 0, backend=backend)
    cache.update(zip(missing["chunk_id"], fresh, strict=True))
    ids = chunks["chunk_id"].tolist()
    table = EmbeddingTable(ids, np.stack([cache[c] for c in ids]) if ids else fresh)
    metrics = {
        "chunks": len(ids),
        "embedded": len(missing),
        "reused": len(ids) - len(missing),
        "dim": table.dim,
        "embedder": identity,
        "embedder_name": embedder,
        "embed_backend": backend,
        "embedder_hash": chosen.model_hash,
        "finetune": chosen.finetune,
        "shards": p.sharding.shards if p.sharding.shards > 1 and len(missing) > 1 else 1,
    }
    table.write(paths.embeddings, metrics)
    return metrics


def main() -> None:
    """Command-line entry of the embed stage (`python -m components.stages.embed`)."""
    stage_main("embed", run)


if __name__ == "__main__":
    main()
