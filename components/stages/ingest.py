"""ingest: read a corpus folder, validate every document, quarantine the bad ones with a reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field

from components.config import ParamsError, StrictModel, parse_section
from components.data.corpus import list_versions, read_documents, read_qa
from components.data.validation import validate_documents
from components.stages.common import Layout, log, stage_main, write_json


class IngestParams(StrictModel):
    source: str = "data/raw/sample"
    min_chars: int = Field(20, ge=1)
    max_chars: int = Field(200_000, ge=1)


def run(params: dict[str, Any], layout: Layout) -> dict[str, Any]:
    p = parse_section(IngestParams, params, "ingest")
    if p.min_chars > p.max_chars:
        raise ParamsError("ingest.min_chars must not exceed ingest.max_chars")
    versions = list_versions(Path(p.source))
    raw, qa_items, quarantined = [], [], []
    for version, folder in versions:
        raw.extend(read_documents(folder / "docs", version))
        items, rejected = read_qa(folder / "qa.jsonl", version)
        qa_items.extend(items)
        quarantined.extend({"doc_id": None, **r} for r in rejected)
    valid, bad_docs = validate_documents(raw, p.min_chars, p.max_chars)
    quarantined = bad_docs + quarantined
    if valid.empty:
        reasons = sorted({q["reason"] for q in quarantined})[:5]
        raise ValueError(
            f"no valid document in {p.source} ({len(raw)} found, all quarantined; "
            f"first reasons: {reasons}). See {layout.quarantine}."
        )
    qa = pd.DataFrame(qa_items, columns=["id", "question", "answer", "doc_id", "split", "version"])
    known = set(zip(valid["version"], valid["doc_id"], strict=True))
    orphan = ~pd.Series(
        [(v, d) in known for v, d in zip(qa["version"], qa["doc_id"], strict=True)], dtype=bool
    )
    for _, row in qa[orphan].iterrows():
        quarantined.append(
            {
                "doc_id": row["doc_id"],
                "source": f"qa:{row['id']}",
                "version": row["version"],
                "reason": "question refers to a document that is missing or quarantined",
            }
        )
    qa = qa[~orphan].reset_index(drop=True)

    layout.interim.mkdir(parents=True, exist_ok=True)
    valid.assign(metadata=valid["metadata"].map(json.dumps)).to_parquet(layout.documents, index=False)
    qa.to_parquet(layout.qa, index=False)
    with layout.quarantine.open("w") as fh:
        for record in quarantined:
            fh.write(json.dumps(record) + "\n")
    for record in quarantined:
        log.warning("quarantined %s (%s): %s", record.get("source"), record["version"], record["reason"])
    latest = versions[-1][0]
    metrics = {
        "versions": len(versions),
        "latest_version": latest,
        "documents": int((valid["version"] == latest).sum()),
        "documents_all_versions": len(valid),
        "quarantined": len(quarantined),
        "questions": int((qa["version"] == latest).sum()),
        "train_questions": int(((qa["version"] == latest) & (qa["split"] == "train")).sum()),
        "test_questions": int(((qa["version"] == latest) & (qa["split"] == "test")).sum()),
    }
    write_json(layout.metrics / "ingest.json", metrics)
    return metrics


def main() -> None:
    stage_main("ingest", run)


if __name__ == "__main__":
    main()
