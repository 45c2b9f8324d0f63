"""Reading a corpus folder (every version) into validated tables, with the rejects and reasons."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from components.core.artifacts import write_jsonl, write_table
from components.data.corpus import forgotten_documents, list_versions, read_documents, read_qa
from components.data.readers import ReadOptions
from components.data.validation import validate_documents

log = logging.getLogger("retro")

QA_COLUMNS = ["id", "question", "answer", "doc_id", "split", "version"]


@dataclass
class IngestedCorpus:
    """Documents and questions of every corpus version, with the versions in order."""

    versions: list[str]
    documents: pd.DataFrame
    qa: pd.DataFrame
    quarantined: list[dict]
    found: int
    forgotten: dict[str, int] = field(default_factory=lambda: {"documents": 0, "questions": 0})
    reading: dict[str, dict] = field(default_factory=dict)  # per file suffix: files, pages, seconds

    def summary(self) -> dict[str, int | str]:
        """Counts of the newest version (and of all versions where said)."""
        latest = self.versions[-1]
        qa, docs = self.qa, self.documents
        newest = qa["version"] == latest
        return {
            "versions": len(self.versions),
            "latest_version": latest,
            "documents": int((docs["version"] == latest).sum()),
            "documents_all_versions": len(docs),
            "quarantined": len(self.quarantined),
            "questions": int(newest.sum()),
            "train_questions": int((newest & (qa["split"] == "train")).sum()),
            "test_questions": int((newest & (qa["split"] == "test")).sum()),
            "forgotten_documents": self.forgotten["documents"],
            "forgotten_questions": self.forgotten["questions"],
            "formats": {
                suffix: {
                    **r,
                    "seconds": round(r["seconds"], 3),
                    "pages_per_s": _rate(r["pages"], r["seconds"]),
                }
                for suffix, r in sorted(self.reading.items())
            },
        }


def _rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 else None


def ingest_corpus(
    source: Path, min_chars: int, max_chars: int, options: ReadOptions | None = None
) -> IngestedCorpus:
    """Every version's documents and questions; bad documents and orphan questions quarantined.
    Documents listed in the corpus's `forgotten.txt` and their questions are left out of every
    version (counted, not quarantined: nothing of them is kept)."""
    versions = list_versions(source)
    gone = forgotten_documents(source)
    raw, qa_items, quarantined = [], [], []
    forgotten = {"documents": 0, "questions": 0}
    reading: dict[str, dict] = {}
    for version, folder in versions:
        documents = read_documents(folder / "docs", version, options, reading)
        raw.extend(d for d in documents if d.doc_id not in gone)
        items, rejected = read_qa(folder / "qa.jsonl", version)
        qa_items.extend(q for q in items if q["doc_id"] not in gone)
        forgotten["documents"] += sum(d.doc_id in gone for d in documents)
        forgotten["questions"] += sum(q["doc_id"] in gone for q in items)
        quarantined.extend({"doc_id": None, **r} for r in rejected)
    valid, bad_docs = validate_documents(raw, min_chars, max_chars)
    quarantined = bad_docs + quarantined
    qa = pd.DataFrame(qa_items, columns=QA_COLUMNS)
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
    return IngestedCorpus([v for v, _ in versions], valid, qa, quarantined, len(raw), forgotten, reading)


def write_ingested(corpus: IngestedCorpus, documents: Path, qa: Path, quarantine: Path) -> None:
    """The document and question tables, and the quarantine file (one JSON object a reject)."""
    frame = corpus.documents
    write_table(frame.assign(metadata=frame["metadata"].map(json.dumps)), documents)
    write_table(corpus.qa, qa)
    write_jsonl(quarantine, corpus.quarantined)
    for record in corpus.quarantined:
        log.warning("quarantined %s (%s): %s", record.get("source"), record["version"], record["reason"])
