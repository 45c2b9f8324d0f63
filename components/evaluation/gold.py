"""Gold chunks: which chunks of a question's document hold its answer.

The rules, in order (text compared after SQuAD normalisation: lower case, no punctuation or
articles, single spaces):

1. `span`: the chunks whose text contains the whole answer.
2. `overlap`: else the chunk(s) holding the largest share of the answer's tokens, when that
   share is at least `min_overlap` (an answer paraphrased or cut across a chunk border).
3. `document`: else, and for answers that are labels rather than spans (yes / no / maybe,
   true / false) or empty, every chunk of the gold document counts as gold.

`span` and `overlap` golds are *located*: chunk-level recall and MRR are computed over the
questions with a located gold only. Document-level figures use every question.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pandas as pd

from components.evaluation.metrics import normalize_answer

LABEL_ANSWERS = frozenset({"yes", "no", "maybe", "true", "false"})
DEFAULT_MIN_OVERLAP = 0.6
KINDS = ("span", "overlap", "document")


@dataclass(frozen=True)
class Gold:
    """The chunks that hold a question's answer, and how they were matched."""

    kind: str  # span | overlap | document
    chunk_ids: tuple[str, ...]

    @property
    def located(self) -> bool:
        """True when the answer was found in particular chunks (not the whole document)."""
        return self.kind != "document"


class GoldFinder:
    """Finds the gold chunks of (document, answer) pairs in one chunk table (one version)."""

    def __init__(self, chunks: pd.DataFrame, min_overlap: float = DEFAULT_MIN_OVERLAP) -> None:
        if not 0.0 < min_overlap <= 1.0:
            raise ValueError(f"min_overlap must lie in (0, 1], got {min_overlap}")
        self.min_overlap = min_overlap
        ordered = chunks.sort_values(["doc_id", "position"])
        self.text_of: dict[str, str] = dict(zip(ordered["chunk_id"], ordered["text"], strict=True))
        self._by_doc: dict[str, list[tuple[str, str]]] = {}
        for doc_id, cid, text in zip(ordered["doc_id"], ordered["chunk_id"], ordered["text"], strict=True):
            self._by_doc.setdefault(str(doc_id), []).append((cid, f" {normalize_answer(text)} "))

    @classmethod
    def whole_documents(
        cls, doc_ids: list[str], texts: list[str], chunk_ids: list[str] | None = None
    ) -> GoldFinder:
        """A finder over documents indexed whole: each document one chunk, whose id is
        `chunk_ids[i]` (the doc id when not given)."""
        ids = chunk_ids if chunk_ids is not None else doc_ids
        return cls(pd.DataFrame({"doc_id": doc_ids, "chunk_id": ids, "text": texts, "position": 0}))

    def find(self, doc_id: str, answer: str) -> Gold:
        """The gold of one answer in its document (an unknown document has no gold chunks)."""
        chunks = self._by_doc.get(str(doc_id), [])
        everything = Gold("document", tuple(cid for cid, _ in chunks))
        norm = normalize_answer(answer)
        if not norm or norm in LABEL_ANSWERS or not chunks:
            return everything
        exact = tuple(cid for cid, text in chunks if f" {norm} " in text)
        if exact:
            return Gold("span", exact)
        wanted = Counter(norm.split())
        shares = [
            (sum((wanted & Counter(text.split())).values()) / sum(wanted.values()), cid)
            for cid, text in chunks
        ]
        best = max(share for share, _ in shares)
        if best >= self.min_overlap:
            return Gold("overlap", tuple(cid for share, cid in shares if share == best))
        return everything


def gold_counts(golds: list[Gold]) -> dict[str, int]:
    """How many questions got each kind of gold."""
    counts = Counter(g.kind for g in golds)
    return {kind: counts.get(kind, 0) for kind in KINDS}


def located_golds(
    questions: pd.DataFrame, chunks: pd.DataFrame, min_overlap: float = DEFAULT_MIN_OVERLAP
) -> tuple[list[str], list[set[str]]]:
    """The questions (rows with doc_id, question, answer) whose answer was located in particular
    chunks of `chunks`, and those chunks' ids."""
    finder = GoldFinder(chunks, min_overlap)
    golds = [finder.find(d, a) for d, a in zip(questions["doc_id"], questions["answer"], strict=True)]
    located = [(q, set(g.chunk_ids)) for q, g in zip(questions["question"], golds, strict=True) if g.located]
    return [q for q, _ in located], [g for _, g in located]
