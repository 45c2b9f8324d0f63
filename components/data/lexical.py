"""BM25 tokenization that keeps identifiers whole.

The default word pattern of most BM25 libraries (two or more word characters) cuts `SB-1002`
into `sb` and `1002`, `12.5 mg` into `12` and `mg` (the `5` is dropped), and `Rhoquin-137` into
`rhoquin` and `137`, so a question naming a part number matches every document that shares one
of the pieces. Here a token is a run of word characters joined by `-`, `.`, `/`, `:` or `+`
(`sb-1002`, `12.5`, `3.2.1`, `iso/iec`), lower-cased, and each joined token also yields its
pieces: the whole identifier is a rare term that scores high, the pieces still match a text that
writes them apart ("SB 1002").
"""

from __future__ import annotations

import logging
import re
from typing import Any

from bm25s.stopwords import STOPWORDS_EN

TOKENIZER = "identifiers-v1"
"""Recorded with every BM25 index: a query is tokenized the way its index was."""

_TOKEN = re.compile(r"\w+(?:[-./:+]\w+)*")
_JOINER = re.compile(r"[-./:+]")
_STOPWORDS = frozenset(STOPWORDS_EN)


def _kept(token: str) -> bool:
    """Single letters and stop words carry nothing; single digits do ("Part 5")."""
    return token not in _STOPWORDS and (len(token) > 1 or token.isdigit())


def tokenize(text: str) -> list[str]:
    """The BM25 terms of one text: identifiers whole, then their pieces."""
    terms: list[str] = []
    for match in _TOKEN.finditer(text.lower()):
        token = match.group()
        if _kept(token):
            terms.append(token)
        if _JOINER.search(token):
            terms.extend(piece for piece in _JOINER.split(token) if _kept(piece))
    return terms


def tokenize_all(texts: list[str]) -> list[list[str]]:
    """`tokenize` over many texts; an empty text becomes one empty-marker term, never an empty list."""
    return [tokenize(text) or [""] for text in texts]


def bm25s_module() -> Any:
    """Import bm25s, which sets its own logger to DEBUG on import, and quiet it."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def build_bm25(texts: list[str]) -> Any:
    """A bm25s index over the identifier-keeping terms of `texts` (row i is text i)."""
    index = bm25s_module().BM25()
    index.index(tokenize_all(texts), show_progress=False)
    return index
