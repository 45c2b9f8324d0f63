"""embed: encode each unique chunk once with the sentence-transformers embedder.

Vectors of chunks seen in an earlier run (same embedder, same chunk id, which hashes the text)
are reused, so a new corpus version costs only its new or changed chunks.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import Field

from components.config import StrictModel, parse_section
from components.embed.encoder import encode
from components.sharding import ShardingParams
from components.stages.common import Layout, load_shared, read_table, stage_main, write_json


class EmbedParams(StrictModel):
    batch_size: int = Field(64, ge=1)
    sharding: ShardingParams = ShardingParams()


def load_embeddings(layout: Layout) -> tuple[list[str], np.ndarray]:
    """(chunk ids, vectors) written by this stage."""
    folder = layout.embeddings
    if not (folder / "vectors.npy").exists():
        raise FileNotFoundError(f"{folder} is missing: run the embed stage first")
    ids = json.loads((folder / "ids.json").read_text())
    return ids, np.load(folder / "vectors.npy")


def cached_embeddings(layout: Layout, embedder: str) -> dict[str, np.ndarray]:
    """Vectors from the previous run of this stage when it used the same embedder, by chunk id."""
    manifest = layout.embeddings / "manifest.json"
    if not manifest.exists() or json.loads(manifest.read_text()).get("embedder") != embedder:
        return {}
    try:
        ids, vectors = load_embeddings(layout)
    except (OSError, ValueError):
        return {}
    if len(ids) != len(vectors):
        return {}
    return dict(zip(ids, vectors, strict=True))


def run(params: dict[str, Any], layout: Layout) -> dict[str, Any]:
    p = parse_section(EmbedParams, params, "embed")
    model, _ = load_shared(params)
    chunks = read_table(layout.chunks, "chunk").drop_duplicates("chunk_id")
    cache = cached_embeddings(layout, model.embedder)
    missing = chunks[~chunks["chunk_id"].isin(cache.keys())]
    texts = missing["text"].tolist()
    if p.sharding.active:
        from components.embed.sharded import encode_sharded  # imports Prefect and the cluster

        fresh = encode_sharded(texts, model.embedder, p.batch_size, p.sharding)
    else:
        fresh = encode(texts, model.embedder, p.batch_size, progress=len(missing) > 0)
    cache.update(zip(missing["chunk_id"], fresh, strict=True))
    ids = chunks["chunk_id"].tolist()
    vectors = np.stack([cache[c] for c in ids]) if ids else fresh
    layout.embeddings.mkdir(parents=True, exist_ok=True)
    # write beside, then rename: an interrupted run never leaves ids and vectors out of step
    with (layout.embeddings / "vectors.tmp.npy").open("wb") as fh:
        np.save(fh, vectors.astype(np.float32))
    (layout.embeddings / "ids.tmp.json").write_text(json.dumps(ids))
    (layout.embeddings / "vectors.tmp.npy").replace(layout.embeddings / "vectors.npy")
    (layout.embeddings / "ids.tmp.json").replace(layout.embeddings / "ids.json")
    metrics = {
        "chunks": len(ids),
        "embedded": len(missing),
        "reused": len(ids) - len(missing),
        "dim": int(vectors.shape[1]),
        "embedder": model.embedder,
        "shards": p.sharding.shards if p.sharding.shards > 1 and len(missing) > 1 else 1,
    }
    write_json(layout.embeddings / "manifest.json", metrics)
    write_json(layout.metrics / "embed.json", metrics)
    return metrics


def main() -> None:
    stage_main("embed", run)


if __name__ == "__main__":
    main()
