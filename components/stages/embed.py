"""embed: encode each unique chunk once with the sentence-transformers embedder."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import Field

from components.config import StrictModel, parse_section
from components.embed.encoder import encode
from components.stages.common import Layout, load_shared, read_table, stage_main, write_json


class EmbedParams(StrictModel):
    batch_size: int = Field(64, ge=1)


def load_embeddings(layout: Layout) -> tuple[list[str], np.ndarray]:
    """(chunk ids, vectors) written by this stage."""
    folder = layout.embeddings
    if not (folder / "vectors.npy").exists():
        raise FileNotFoundError(f"{folder} is missing: run the embed stage first")
    ids = json.loads((folder / "ids.json").read_text())
    return ids, np.load(folder / "vectors.npy")


def run(params: dict[str, Any], layout: Layout) -> dict[str, Any]:
    p = parse_section(EmbedParams, params, "embed")
    model, _ = load_shared(params)
    chunks = read_table(layout.chunks, "chunk").drop_duplicates("chunk_id")
    vectors = encode(chunks["text"].tolist(), model.embedder, p.batch_size, progress=True)
    layout.embeddings.mkdir(parents=True, exist_ok=True)
    np.save(layout.embeddings / "vectors.npy", vectors)
    (layout.embeddings / "ids.json").write_text(json.dumps(chunks["chunk_id"].tolist()))
    metrics = {"embedded": len(chunks), "dim": int(vectors.shape[1]), "embedder": model.embedder}
    write_json(layout.embeddings / "manifest.json", metrics)
    write_json(layout.metrics / "embed.json", metrics)
    return metrics


def main() -> None:
    stage_main("embed", run)


if __name__ == "__main__":
    main()
