"""ingest: read a corpus folder, validate every document, quarantine the bad ones with a reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.core.params import PipelineParams
from components.core.paths import Paths
from components.data.ingest import ingest_corpus, write_ingested
from components.data.readers import ReadOptions
from components.stages.entry import stage_main


def run(params: PipelineParams, paths: Paths) -> dict[str, Any]:
    """Run the ingest stage: read, validate and version the documents."""
    p = params.ingest
    source = Path(paths.root) / p.source  # relative: to the project
    corpus = ingest_corpus(
        source, p.min_chars, p.max_chars, ReadOptions(ocr=p.ocr, max_file_mb=p.max_file_mb)
    )
    if corpus.documents.empty:
        reasons = sorted({q["reason"] for q in corpus.quarantined})[:5]
        raise ValueError(
            f"no valid document in {p.source} ({corpus.found} found, all quarantined; "
            f"first reasons: {reasons}). See {paths.quarantine}."
        )
    write_ingested(corpus, paths.documents, paths.qa, paths.quarantine)
    return corpus.summary()


def main() -> None:
    """Command-line entry of the ingest stage (`python -m components.stages.ingest`)."""
    stage_main("ingest", run)


if __name__ == "__main__":
    main()
