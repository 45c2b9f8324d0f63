"""Reading a corpus folder in the data contract: documents, questions and versions."""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

DOC_SUFFIXES = (".md", ".txt", ".html", ".htm", ".jsonl")
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


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs) -> None:  # noqa: ANN001
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("p", "br", "div", "li", "h1", "h2", "h3", "h4", "tr"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    parser = _TextExtractor()
    parser.feed(markup)
    return html.unescape("".join(parser.parts))


def normalise(text: str) -> str:
    """Unicode-safe whitespace normalisation that keeps paragraph breaks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r"\n\s*\n+", "\n\n", text)
    return text.strip()


def read_documents(docs_dir: Path, version: str) -> list[RawDocument]:
    """Read every supported file under `docs_dir` (with a progress bar); unreadable ones carry an
    `error`."""
    from tqdm.auto import tqdm

    documents: list[RawDocument] = []
    files = sorted(p for p in docs_dir.rglob("*") if p.is_file())
    for path in tqdm(files, desc=f"ingest {version}", unit="file", leave=False):
        rel = path.relative_to(docs_dir)
        doc_id = rel.with_suffix("").as_posix()
        suffix = path.suffix.lower()
        if suffix not in DOC_SUFFIXES:
            documents.append(RawDocument(doc_id, "", str(rel), version, {},
                                         f"unsupported file type {suffix or '(none)'}"))
            continue
        try:
            raw = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            documents.append(RawDocument(doc_id, "", str(rel), version, {},
                                         f"undecodable: not UTF-8 ({exc.reason} at byte {exc.start})"))
            continue
        if suffix == ".jsonl":
            documents.extend(_read_jsonl_documents(raw, str(rel), version))
            continue
        text = html_to_text(raw) if suffix in (".html", ".htm") else raw
        documents.append(RawDocument(doc_id, normalise(text), str(rel), version, {}))
    return documents


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
            documents.append(RawDocument(where, "", where, version, {},
                                         "a jsonl document needs 'id' and 'text'"))
            continue
        metadata = record.get("metadata") or {}
        documents.append(RawDocument(str(record["id"]), normalise(str(record["text"])), where,
                                     version, metadata if isinstance(metadata, dict) else {}))
    return documents


def read_qa(path: Path, version: str) -> tuple[list[dict], list[dict]]:
    """Read qa.jsonl; returns (valid items, rejected items with a reason)."""
    items, rejected = [], []
    if not path.exists():
        return items, rejected
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            rejected.append({"source": where, "version": version, "reason": f"invalid JSON: {exc.msg}"})
            continue
        missing = [f for f in QA_FIELDS if not isinstance(record, dict) or f not in record]
        if missing:
            rejected.append({"source": where, "version": version,
                             "reason": f"qa item lacks {', '.join(missing)}"})
            continue
        if record["split"] not in ("train", "test"):
            rejected.append({"source": where, "version": version,
                             "reason": f"split must be train or test, got {record['split']!r}"})
            continue
        items.append({**{f: str(record[f]) for f in QA_FIELDS}, "version": version})
    return items, rejected
