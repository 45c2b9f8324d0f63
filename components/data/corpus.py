"""Reading a corpus folder in the data contract: documents, questions and versions."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from components.data.readers import ReadOptions, Unreadable, read_file

QA_FIELDS = ("id", "question", "answer", "doc_id", "split")
FORGOTTEN_FILE = "forgotten.txt"
"""Beside the versions: document ids taken out of every version (`retro forget` with retraining)."""


@dataclass
class RawDocument:
    """A document as read from disk, before validation. `error` is set when it can't be read."""

    doc_id: str
    text: str
    source: str
    version: str
    metadata: dict
    error: str | None = None


def read_ids(path: Path | None) -> set[str]:
    """Document ids listed one a line (blank lines and `#` comments skipped); empty for None."""
    if path is None:
        return set()
    lines = (line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def forgotten_documents(source: Path) -> set[str]:
    """The ids in the corpus folder's `forgotten.txt`, which ingest drops from every version."""
    path = Path(source) / FORGOTTEN_FILE
    return read_ids(path) if path.is_file() else set()


def sha256(text: str) -> str:
    """Hex SHA-256 of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def list_versions(source: Path) -> list[tuple[str, Path]]:
    """The versions of a corpus, oldest first: `v1/, v2/, ...` or `t001/, ...`, else the folder."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"corpus folder not found: {source}")
    subdirs = [p for p in source.iterdir() if p.is_dir() and (p / "docs").is_dir()]
    versioned = [p for p in subdirs if re.fullmatch(r"[vt]\d+", p.name)]
    if versioned:
        return [(p.name, p) for p in sorted(versioned, key=lambda p: int(p.name[1:]))]
    if (source / "docs").is_dir():
        return [("v1", source)]
    raise FileNotFoundError(f"{source} has no docs/ folder (see the data contract in README.md)")


def normalise(text: str) -> str:
    """Unicode-safe whitespace normalisation that keeps paragraph breaks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r"\n\s*\n+", "\n\n", text)
    return text.strip()


def read_documents(
    docs_dir: Path, version: str, options: ReadOptions | None = None, stats: dict | None = None
) -> list[RawDocument]:
    """Read every file under `docs_dir` with the reader of its type (components/data/readers.py),
    with a progress bar; files that cannot be read carry an `error` (their quarantine reason).
    `stats` collects, per file suffix, the files, pages (a file without pages counts as one) and
    seconds spent reading."""
    import time

    from tqdm.auto import tqdm

    options = options or ReadOptions()
    documents: list[RawDocument] = []
    files = sorted(p for p in docs_dir.rglob("*") if p.is_file())
    inside = docs_dir.resolve()
    for path in tqdm(files, desc=f"ingest {version}", unit="file", leave=False):
        rel = path.relative_to(docs_dir)
        started = time.perf_counter()
        if not path.resolve().is_relative_to(inside):  # a link out of the corpus is never followed
            reason = "a link to a file outside the corpus folder (not read)"
            documents.append(
                RawDocument(rel.with_suffix("").as_posix(), "", rel.as_posix(), version, {}, reason)
            )
            continue
        read = _read_one(path, rel, version, options)
        documents += read
        if stats is not None:
            entry = stats.setdefault(
                path.suffix.lower() or "(none)", {"files": 0, "pages": 0, "seconds": 0.0}
            )
            entry["files"] += 1
            entry["pages"] += sum(max(1, len(d.metadata.get("pages", []))) for d in read if not d.error)
            entry["seconds"] += time.perf_counter() - started
    return documents


def _read_one(path: Path, rel: Path, version: str, options: ReadOptions) -> list[RawDocument]:
    doc_id = rel.with_suffix("").as_posix()
    size_mb = path.stat().st_size / 2**20
    if size_mb > options.max_file_mb:  # checked before a byte is read
        reason = f"oversized file ({size_mb:.3g} MB, maximum {options.max_file_mb:g} MB: ingest.max_file_mb)"
        return [RawDocument(doc_id, "", rel.as_posix(), version, {}, reason)]
    try:
        if path.suffix.lower() == ".jsonl":
            return _read_jsonl_documents(read_plain_text(path), rel.as_posix(), version)
        result = read_file(path, options)
    except Unreadable as exc:
        return [RawDocument(doc_id, "", rel.as_posix(), version, {}, str(exc))]
    return [RawDocument(doc_id, normalise(result.text), rel.as_posix(), version, result.metadata())]


def read_plain_text(path: Path) -> str:
    """A text file's content; a file that is not UTF-8 raises a quarantinable error."""
    from components.data.readers import decode_utf8

    return decode_utf8(path.read_bytes())


def _read_jsonl_documents(raw: str, source: str, version: str) -> list[RawDocument]:
    documents = []
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            documents.append(RawDocument(where, "", where, version, {}, f"invalid JSON: {exc.msg}"))
            continue
        if not isinstance(record, dict) or "id" not in record or "text" not in record:
            documents.append(
                RawDocument(where, "", where, version, {}, "a jsonl document needs 'id' and 'text'")
            )
            continue
        if ".." in Path(str(record["id"])).parts or str(record["id"]).startswith("/"):
            reason = f"document id {str(record['id'])[:80]!r} leaves the corpus (.. or an absolute path)"
            documents.append(RawDocument(where, "", where, version, {}, reason))
            continue
        metadata = record.get("metadata") or {}
        documents.append(
            RawDocument(
                str(record["id"]),
                normalise(str(record["text"])),
                where,
                version,
                metadata if isinstance(metadata, dict) else {},
            )
        )
    return documents


def read_qa(path: Path, version: str) -> tuple[list[dict], list[dict]]:
    """Read qa.jsonl; returns (valid items, rejected items with a reason)."""
    items, rejected = [], []
    if not path.exists():
        return items, rejected
    for lineno, raw in enumerate(path.read_bytes().splitlines(), start=1):
        where = f"{path.name}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"not UTF-8 ({exc.reason} at byte {exc.start} of the line)"
            rejected.append({"source": where, "version": version, "reason": reason})
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            rejected.append({"source": where, "version": version, "reason": f"invalid JSON: {exc.msg}"})
            continue
        missing = [f for f in QA_FIELDS if not isinstance(record, dict) or f not in record]
        if missing:
            rejected.append(
                {"source": where, "version": version, "reason": f"qa item lacks {', '.join(missing)}"}
            )
            continue
        if record["split"] not in ("train", "test"):
            rejected.append(
                {
                    "source": where,
                    "version": version,
                    "reason": f"split must be train or test, got {record['split']!r}",
                }
            )
            continue
        items.append({**{f: str(record[f]) for f in QA_FIELDS}, "version": version})
    return items, rejected
