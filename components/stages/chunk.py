"""chunk: token-aware windows over every document, with stable content-hash chunk ids."""

from __future__ import annotations

from typing import Any

from components.core.artifacts import read_table, write_table
from components.core.params import PipelineParams
from components.core.paths import Paths
from components.data.chunking import CHUNKS_SCHEMA, chunk_documents, chunk_summary, load_offsets
from components.embed.encoder import resolve_embedder
from components.stages.entry import stage_main


def run(params: PipelineParams, paths: Paths) -> dict[str, Any]:
    """Run the chunk stage: cut the ingested documents into token windows."""
    p = params.chunk
    name = resolve_embedder(params.model.embedder) if p.tokenizer == "embedder" else p.tokenizer
    docs = read_table(paths.documents, "ingest")
    chunks = chunk_documents(docs, load_offsets(name), p.max_tokens, p.overlap, p.split_at_headings)
    write_table(chunks, paths.chunks, CHUNKS_SCHEMA)
    return chunk_summary(chunks, len(docs))


def main() -> None:
    """Command-line entry of the chunk stage (`python -m components.stages.chunk`)."""
    stage_main("chunk", run)


if __name__ == "__main__":
    main()
