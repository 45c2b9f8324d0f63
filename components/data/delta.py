"""Updates as deltas: the next full snapshot of a corpus from the previous one, a folder of added
or changed documents and questions, and the ids of documents to remove.

Unchanged documents and questions are carried forward, so a delta that holds only what changed
keeps the replay reservoir and the evaluation of unchanged facts. A document's id is its path
under `docs/` without the extension (for `.jsonl` files, each record's `id`), as in ingest.
Questions are matched by `id`; the questions of a removed document go with it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

QA_FILE = "qa.jsonl"


@dataclass
class DeltaSummary:
    """What a delta did to the previous snapshot."""

    documents_added: list[str] = field(default_factory=list)
    documents_changed: list[str] = field(default_factory=list)
    documents_removed: list[str] = field(default_factory=list)
    documents_carried: int = 0
    questions_new: int = 0
    questions_revised: int = 0
    questions_removed: int = 0
    questions_unchanged: int = 0

    def as_dict(self) -> dict:
        """The summary as a plain dict, for metrics and logs."""
        return asdict(self)


def _jsonl_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def document_ids(docs: Path) -> dict[str, Path]:
    """Every document id under `docs` with the file that holds it."""
    ids: dict[str, Path] = {}
    for path in sorted(p for p in docs.rglob("*") if p.is_file()):
        if path.suffix.lower() == ".jsonl":
            for record in _jsonl_records(path):
                ids[str(record.get("id"))] = path
        else:
            ids[path.relative_to(docs).with_suffix("").as_posix()] = path
    return ids


def _drop(docs: Path, ids: set[str]) -> None:
    """Remove these document ids from a docs folder (files, or records of jsonl files)."""
    for doc_id, path in document_ids(docs).items():
        if doc_id not in ids or not path.exists():
            continue
        if path.suffix.lower() == ".jsonl":
            kept = [r for r in _jsonl_records(path) if str(r.get("id")) not in ids]
            _write_jsonl(path, kept) if kept else path.unlink()
        else:
            path.unlink()


def build_snapshot(previous: Path, delta: Path | None, removed: set[str], target: Path) -> DeltaSummary:
    """Write the next snapshot (docs/ and qa.jsonl) to `target` from the `previous` one, the
    `delta` folder (docs/, qa.jsonl, either optional; None: removals only) and the removed ids.
    ValueError for an id to remove that `previous` does not hold, or one both removed and sent."""
    before = document_ids(previous / "docs")
    sent = document_ids(delta / "docs") if delta is not None and (delta / "docs").is_dir() else {}
    unknown = sorted(removed - set(before))
    if unknown:
        raise ValueError(f"cannot remove documents the corpus does not hold: {unknown[:10]}")
    both = sorted(removed & set(sent))
    if both:
        raise ValueError(f"documents both removed and sent in the delta: {both[:10]}")
    summary = DeltaSummary(
        documents_added=sorted(set(sent) - set(before)),
        documents_changed=sorted(set(sent) & set(before)),
        documents_removed=sorted(removed),
    )
    shutil.copytree(previous / "docs", target / "docs")
    _drop(target / "docs", removed | set(sent))
    if sent:
        _overlay(delta / "docs", target / "docs")
    summary.documents_carried = len(set(before) - removed - set(sent))
    new_questions = delta / QA_FILE if delta is not None else None
    _merge_questions(previous / QA_FILE, new_questions, removed, target / QA_FILE, summary)
    return summary


def _overlay(source: Path, docs: Path) -> None:
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        out = docs / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".jsonl" and out.exists():
            _write_jsonl(out, _jsonl_records(out) + _jsonl_records(path))
        else:
            shutil.copy2(path, out)


def _merge_questions(
    old: Path, new: Path | None, removed: set[str], out: Path, summary: DeltaSummary
) -> None:
    carried = {str(q["id"]): q for q in (_jsonl_records(old) if old.exists() else [])}
    summary.questions_removed = sum(q.get("doc_id") in removed for q in carried.values())
    carried = {i: q for i, q in carried.items() if q.get("doc_id") not in removed}
    for item in _jsonl_records(new) if new is not None and new.exists() else []:
        key = str(item["id"])
        if key not in carried:
            summary.questions_new += 1
        elif item != carried[key]:
            summary.questions_revised += 1
        carried[key] = item
    summary.questions_unchanged = len(carried) - summary.questions_new - summary.questions_revised
    if carried:
        _write_jsonl(out, list(carried.values()))


def make_versioned(source: Path) -> bool:
    """Turn a flat corpus (docs/ and qa.jsonl at the top) into version v1 in place, so the next
    version can go beside it; False when it is versioned already. Ingest reads a flat corpus as
    v1, so nothing about its documents changes."""
    source = Path(source)
    if not (source / "docs").is_dir() or (source / "v1").exists():
        return False
    staging = source / ".v1.incoming"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name in ("docs", QA_FILE):
        if (source / name).exists():
            (source / name).rename(staging / name)
    staging.rename(source / "v1")
    return True
