"""Token-aware chunking with overlap, stable content-hash chunk ids and section headings.

A chunk id hashes the document id, the window's text and its occurrence among identical windows
of that document (0 for the first), never its position: an edit early in a document leaves the
ids of every later unchanged window as they were, so only changed text is embedded again, and
repeated windows (boilerplate lines, table rows) still get distinct ids.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

# (text) -> list of (start_char, end_char) per token
OffsetsFn = Callable[[str], list[tuple[int, int]]]


@dataclass(frozen=True)
class Chunk:
    """A window of a document: `start`/`end` are its character span in the document's text,
    `section` the heading path ("Guide > Dosage"), `page` its first page (0: not paged)."""

    chunk_id: str
    doc_id: str
    position: int
    text: str
    section: str = ""
    start: int = 0
    end: int = 0
    page: int = 0


def chunk_id(doc_id: str, text: str, occurrence: int = 0) -> str:
    """Stable id from the document id, the chunk's content and which identical window of the
    document it is (the first keeps the id of a window that occurs once)."""
    key = f"{doc_id}\n{text}" + (f"\n#{occurrence}" if occurrence else "")
    return hashlib.sha256(key.encode()).hexdigest()[:20]


_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)


def heading_paths(text: str) -> list[tuple[int, str]]:
    """(offset, heading path) of every markdown heading: the path joins the enclosing headings
    with " > " by their level (`#` to `######`)."""
    found, path = [], []  # path: (level, title) of the open headings
    for m in _HEADING.finditer(text):
        level, title = len(m.group(1)), m.group(2).strip().strip("`*_")
        path = [(lv, t) for lv, t in path if lv < level] + [(level, title)]
        found.append((m.start(), " > ".join(t for _, t in path)))
    return found


def section_finder(text: str, pages: list[list] | None = None) -> Callable[[int, int], str]:
    """(start, end character offsets of a chunk) -> the heading path of the section the chunk
    starts in: of the nearest markdown heading at or before `start`; before the first heading,
    the first one inside the chunk; else the outline section of the chunk's page (`pages`, PDFs);
    "" when there is none."""
    found = heading_paths(text)
    starts = [s for s, _ in found]
    page_of = page_finder(pages)
    outline = {int(p[1]): str(p[2]) for p in pages or [] if len(p) > 2}

    def section(start: int, end: int) -> str:
        at = bisect.bisect_right(starts, start) - 1
        if at >= 0:
            return found[at][1]
        if found and found[0][0] < end:
            return found[0][1]
        return outline.get(page_of(start), "")

    return section


def page_finder(pages: list[list] | None) -> Callable[[int], int]:
    """(character offset) -> the 1-based page it lies on (`pages`: [start offset, page, ...]
    rows from the PDF reader); 0 for a document without pages."""
    starts = [int(p[0]) for p in pages or []]
    numbers = [int(p[1]) for p in pages or []]

    def page(offset: int) -> int:
        at = bisect.bisect_right(starts, offset) - 1
        return numbers[max(at, 0)] if numbers else 0

    return page


def tokenizer_offsets(tokenizer) -> OffsetsFn:  # noqa: ANN001 - any fast HF tokenizer
    """Token character offsets from a Hugging Face fast tokenizer."""

    def offsets(text: str) -> list[tuple[int, int]]:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [tuple(o) for o in enc["offset_mapping"]]

    return offsets


def load_offsets(name: str) -> OffsetsFn:
    """Token offsets of the tokenizer at `name` (a local folder or a Hub id).

    A local folder with a `tokenizer.json` is read with `tokenizers` alone (the same offsets as
    the transformers tokenizer, without importing torch); anything else goes through
    `AutoTokenizer`.
    """
    path = Path(name) / "tokenizer.json"
    if path.is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_truncation()  # a saved tokenizer may truncate to the model's window
        tokenizer.no_padding()
        return lambda text: [tuple(o) for o in tokenizer.encode(text, add_special_tokens=False).offsets]
    from transformers import AutoTokenizer

    return tokenizer_offsets(AutoTokenizer.from_pretrained(name))


def heading_tokens(text: str, spans: list[tuple[int, int]]) -> list[int]:
    """Index of the first token of every markdown heading line (ascending)."""
    starts = [s for s, _ in spans]
    return sorted({bisect.bisect_left(starts, offset) for offset, _ in heading_paths(text)} - {len(spans)})


def chunk_text(
    doc_id: str,
    text: str,
    offsets: OffsetsFn,
    max_tokens: int,
    overlap: int,
    pages: list[list] | None = None,
    split_at_headings: bool = False,
) -> list[Chunk]:
    """Split `text` into windows of at most `max_tokens` tokens sharing `overlap` tokens.

    Windows end at a line or sentence break when one lies in the last third of the window,
    so chunks rarely cut a sentence. With `split_at_headings`, a window that reaches a markdown
    heading ends before the last one it reaches and the next window starts at that heading,
    without overlap: sections are packed whole into windows, and only a section longer than a
    window is cut. `pages` (the PDF reader's page starts) give each chunk its page.
    """
    if max_tokens <= 0 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens > 0 and 0 <= overlap < max_tokens")
    spans = offsets(text)
    if not spans:
        return []
    chunks: list[Chunk] = []
    seen: dict[str, int] = {}  # identical windows so far
    section, page = section_finder(text, pages), page_finder(pages)
    headings = heading_tokens(text, spans) if split_at_headings else []
    start = 0
    while start < len(spans):
        end = min(start + max_tokens, len(spans))
        inside = headings[bisect.bisect_right(headings, start) : bisect.bisect_right(headings, end)]
        at_heading = bool(inside)
        if at_heading:
            end = inside[-1]  # whole sections only; the next window starts at this heading
        elif end < len(spans):
            for cut in range(end - 1, start + (2 * max_tokens) // 3, -1):
                between = (
                    text[spans[cut - 1][1] : spans[cut][0]] + text[spans[cut - 1][0] : spans[cut - 1][1]]
                )
                if "\n" in between or between.rstrip().endswith((".", "!", "?", ";")):
                    end = cut
                    break
        first, last = spans[start][0], spans[end - 1][1]
        raw = text[first:last]
        piece = raw.strip()
        if piece:
            occurrence = seen.get(piece, 0)
            seen[piece] = occurrence + 1
            begin = first + len(raw) - len(raw.lstrip())
            chunks.append(Chunk(
                chunk_id(doc_id, piece, occurrence), doc_id, len(chunks), piece, section(first, last),
                begin, begin + len(piece), page(begin),
            ))  # fmt: skip
        if end >= len(spans):
            break
        if at_heading:
            start = end
            continue
        next_start = max(end - overlap, start + 1)
        # begin the next window at a word start, not inside a word
        while next_start < end and spans[next_start][0] > 0 and not text[spans[next_start][0] - 1].isspace():
            next_start += 1
        start = next_start
    return chunks


CHUNKS_SCHEMA = 3
"""Version of the chunk table's layout (its columns and how chunk ids are made).
2: a `section` column; identical windows of a document get distinct ids.
3: `section` is the heading path; `start`, `end` (character span), `page` and `source` (file)."""
CHUNK_COLUMNS = [
    "version",
    "chunk_id",
    "doc_id",
    "position",
    "text",
    "section",
    "start",
    "end",
    "page",
    "source",
]


def chunk_documents(
    docs: pd.DataFrame, offsets: OffsetsFn, max_tokens: int, overlap: int, split_at_headings: bool = False
) -> pd.DataFrame:
    """The chunk table of every document (all versions), with a progress bar."""
    from tqdm.auto import tqdm

    rows = []
    for doc in tqdm(docs.itertuples(), total=len(docs), desc="chunk", leave=False):
        pages = _metadata(doc).get("pages")
        source = str(getattr(doc, "source", "") or "")
        for c in chunk_text(doc.doc_id, doc.text, offsets, max_tokens, overlap, pages, split_at_headings):
            rows.append({"version": doc.version, **asdict(c), "source": source})
    return pd.DataFrame(rows, columns=CHUNK_COLUMNS)


def _metadata(doc) -> dict:  # noqa: ANN001 - a row of the document table
    raw = getattr(doc, "metadata", None)
    value = json.loads(raw) if isinstance(raw, str) and raw else raw
    return value if isinstance(value, dict) else {}


def chunk_summary(chunks: pd.DataFrame, documents: int) -> dict[str, float | int]:
    """chunk.json: counts, repeated windows (identical text within a version's document) and the
    share of chunks that lie under a section heading."""
    repeated = chunks.duplicated(["version", "doc_id", "text"]).sum() if len(chunks) else 0
    return {
        "chunks": len(chunks),
        "unique_chunks": int(chunks["chunk_id"].nunique()),
        "mean_chunks_per_doc": round(len(chunks) / max(1, documents), 3),
        "repeated_windows": int(repeated),
        "share_with_section": round(float((chunks["section"] != "").mean()), 3) if len(chunks) else 0.0,
        "share_with_page": round(float((chunks["page"] > 0).mean()), 3) if len(chunks) else 0.0,
    }


def read_chunks(path: Path) -> pd.DataFrame:
    """The chunk table written by the chunk stage (refused when another schema wrote it)."""
    from components.core.artifacts import read_table

    return read_table(path, "chunk", CHUNKS_SCHEMA)
