"""SQuAD-style exact match and token F1, answer support, and retrieval recall / MRR."""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, articles and extra whitespace."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised prediction equals the normalised gold answer (SQuAD's EM)."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the normalised texts (SQuAD's F1)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "into",
        "about",
        "than",
        "then",
        "so",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "which",
        "who",
        "whom",
        "whose",
        "what",
        "when",
        "where",
        "why",
        "how",
        "not",
        "no",
        "nor",
        "do",
        "does",
        "did",
        "has",
        "have",
        "had",
        "can",
        "could",
        "may",
        "might",
        "will",
        "would",
        "shall",
        "should",
        "i",
        "we",
        "you",
        "he",
        "she",
        "they",
        "them",
        "their",
        "our",
        "your",
        "his",
        "her",
        "my",
        "me",
        "us",
        "also",
        "such",
        "very",
        "more",
        "most",
        "other",
    ]
)


def content_tokens(text: str) -> list[str]:
    """The normalised tokens of `text` that carry content (stop words dropped)."""
    return [t for t in normalize_answer(text).split() if t not in STOP_WORDS]


def support_share(answer: str, passages: list[str]) -> float | None:
    """The share of the content tokens of `answer` that appear in `passages`; None for an answer
    without content tokens (nothing to check)."""
    wanted = set(content_tokens(answer))
    if not wanted:
        return None
    given = set(normalize_answer(" ".join(passages)).split())
    return len(wanted & given) / len(wanted)


def answer_support(answer: str, passages: list[str]) -> float | None:
    """1.0 when every content token of `answer` appears in `passages`, else 0.0; None for an
    answer without content tokens (nothing to check)."""
    share = support_share(answer, passages)
    return None if share is None else float(share == 1.0)


def recall_at_k(retrieved_doc_ids: list[str], gold_doc_id: str, k: int) -> float:
    """1.0 when the gold document is among the first `k` retrieved."""
    return float(gold_doc_id in retrieved_doc_ids[:k])


def reciprocal_rank(retrieved_doc_ids: list[str], gold_doc_id: str) -> float:
    """1 / rank of the gold document; 0.0 when it was not retrieved."""
    for rank, doc_id in enumerate(retrieved_doc_ids, start=1):
        if doc_id == gold_doc_id:
            return 1.0 / rank
    return 0.0


def mean(values: list[float]) -> float:
    """Arithmetic mean; 0.0 for no values."""
    return sum(values) / len(values) if values else 0.0


def percentile(values: list[float], q: float) -> float:
    """The `q`-th percentile by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]
