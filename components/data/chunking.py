"""Token-aware chunking with overlap and stable content-hash chunk ids."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

# (text) -> list of (start_char, end_char) per token
OffsetsFn = Callable[[str], list[tuple[int, int]]]


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    position: int
    text: str


def chunk_id(doc_id: str, text: str) -> str:
    """Stable id from the document id and the chunk's content."""
    return hashlib.sha256(f"{doc_id}\n{text}".encode()).hexdigest()[:20]


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


def chunk_text(
    doc_id: str, text: str, offsets: OffsetsFn, max_tokens: int, overlap: int
) -> list[Chunk]:
    """Split `text` into windows of at most `max_tokens` tokens sharing `overlap` tokens.

    Windows end at a line or sentence break when one lies in the last third of the window,
    so chunks rarely cut a sentence.
    """
    if max_tokens <= 0 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens > 0 and 0 <= overlap < max_tokens")
    spans = offsets(text)
    if not spans:
        return []
    chunks: list[Chunk] = []
    start = 0
    while start < len(spans):
        end = min(start + max_tokens, len(spans))
        if end < len(spans):
            for cut in range(end - 1, start + (2 * max_tokens) // 3, -1):
                between = text[spans[cut - 1][1]:spans[cut][0]] + text[spans[cut - 1][0]:spans[cut - 1][1]]
                if "\n" in between or between.rstrip().endswith((".", "!", "?", ";")):
                    end = cut
                    break
        piece = text[spans[start][0]:spans[end - 1][1]].strip()
        if piece:
            chunks.append(Chunk(chunk_id(doc_id, piece), doc_id, len(chunks), piece))
        if end >= len(spans):
            break
        next_start = max(end - overlap, start + 1)
        # begin the next window at a word start, not inside a word
        while next_start < end and spans[next_start][0] > 0 and not text[spans[next_start][0] - 1].isspace():
            next_start += 1
        start = next_start
    return chunks


CHUNKS_SCHEMA = 1
"""Version of the chunk table's layout (its columns and how chunk ids are made)."""
CHUNK_COLUMNS = ["version", "chunk_id", "doc_id", "position", "text"]


def chunk_documents(docs: pd.DataFrame, offsets: OffsetsFn, max_tokens: int, overlap: int) -> pd.DataFrame:
    """The chunk table of every document (all versions), with a progress bar."""
    from tqdm.auto import tqdm

    rows = []
    for doc in tqdm(docs.itertuples(), total=len(docs), desc="chunk", leave=False):
        for c in chunk_text(doc.doc_id, doc.text, offsets, max_tokens, overlap):
            rows.append(
                {"version": doc.version, "chunk_id": c.chunk_id, "doc_id": c.doc_id, "position": c.position, "text": c.text}
            )
    return pd.DataFrame(rows, columns=CHUNK_COLUMNS)


def chunk_summary(chunks: pd.DataFrame, documents: int) -> dict[str, float | int]:
    return {
        "chunks": len(chunks),
        "unique_chunks": int(chunks["chunk_id"].nunique()),
        "mean_chunks_per_doc": round(len(chunks) / max(1, documents), 3),
    }


def read_chunks(path: Path) -> pd.DataFrame:
    """The chunk table written by the chunk stage (refused when another schema wrote it)."""
    from components.core.artifacts import read_table

    return read_table(path, "chunk", CHUNKS_SCHEMA)
