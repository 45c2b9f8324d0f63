"""Training examples: a question, its answer and the passages retrieved for it."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

import pandas as pd

from components.stores.retriever import Retriever


@dataclass
class Example:
    qid: str
    question: str
    answer: str
    doc_id: str
    passages: list[str]
    passage_doc_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def gold_index(self) -> int | None:
        """Position of the first passage from the gold document, or None when none was retrieved."""
        return self.passage_doc_ids.index(self.doc_id) if self.doc_id in self.passage_doc_ids else None


def with_retrieval(
    items: list[dict],
    retriever: Retriever,
    k: int,
    gold_chunks: dict[str, list[str]],
    ensure_gold: bool = True,
    seed: int = 0,
) -> list[Example]:
    """Attach the top-k retrieved passages to each QA item.

    With `ensure_gold`, when retrieval misses the gold document one retrieved passage is
    replaced by the gold chunk that holds the answer (RAFT-style: the model learns to find the
    answer among distractors instead of guessing when the context lacks it).
    """
    if not items:
        return []
    rng = random.Random(seed)
    results = retriever.retrieve([it["question"] for it in items], k)
    examples = []
    for item, hits in zip(items, results, strict=True):
        passages = [h.payload["text"] for h in hits]
        doc_ids = [str(h.payload.get("doc_id")) for h in hits]
        candidates = gold_chunks.get(item["doc_id"], [])
        if ensure_gold and item["doc_id"] not in doc_ids and candidates:
            gold = next((c for c in candidates if item["answer"] in c), candidates[0])
            at = rng.randrange(len(passages)) if len(passages) >= k else rng.randrange(len(passages) + 1)
            if len(passages) >= k:
                passages[at], doc_ids[at] = gold, item["doc_id"]
            else:
                passages.insert(at, gold)
                doc_ids.insert(at, item["doc_id"])
        examples.append(
            Example(item["id"], item["question"], item["answer"], item["doc_id"], passages, doc_ids)
        )
    return examples


def language_modelling(
    chunks: list[dict], retriever: Retriever, k: int, max_examples: int = 0, seed: int = 0
) -> list[Example]:
    """Unsupervised examples for corpora without questions: continue a chunk from its neighbours.

    Each chunk is cut in half at a word boundary; the first half is the prompt, the second the
    target, and the passages are the chunk's retrieved neighbours with the chunk itself excluded,
    so the model learns to use retrieved text rather than to copy its input.
    """
    rng = random.Random(seed)
    usable = [c for c in chunks if len(c["text"].split()) >= 8]
    if max_examples and len(usable) > max_examples:
        usable = rng.sample(usable, max_examples)
    if not usable:
        return []
    prefixes, continuations = [], []
    for c in usable:
        words = c["text"].split()
        cut = len(words) // 2
        prefixes.append(" ".join(words[:cut]))
        continuations.append(" ".join(words[cut : cut + 32]))
    results = retriever.retrieve(prefixes, k + 1)
    examples = []
    for c, prefix, continuation, hits in zip(usable, prefixes, continuations, results, strict=True):
        neighbours = [h for h in hits if h.id != c["chunk_id"]][:k]
        examples.append(
            Example(
                c["chunk_id"],
                f"Continue the text: {prefix}",
                continuation,
                c["doc_id"],
                [h.payload["text"] for h in neighbours],
                [str(h.payload.get("doc_id")) for h in neighbours],
            )
        )
    return examples


def version_examples(
    chunks: pd.DataFrame,
    version: str,
    items: list[dict],
    retriever: Retriever,
    k: int,
    seed: int,
    ensure_gold: bool = True,
    lm_chunk_ids: set[str] | None = None,
    max_lm_examples: int = 0,
) -> list[Example]:
    """Training examples of one corpus version, passages retrieved from that version's chunks.

    QA items become question/answer examples; `lm_chunk_ids` (for corpora without questions)
    become continuation examples on those chunks (the unsupervised objective).
    """
    part = chunks[chunks["version"] == version].sort_values(["doc_id", "position"])
    gold = part.groupby("doc_id")["text"].apply(list).to_dict()
    examples = with_retrieval(items, retriever, k, gold, ensure_gold=ensure_gold, seed=seed)
    if lm_chunk_ids:
        rows = part[part["chunk_id"].isin(lm_chunk_ids)].to_dict("records")
        examples += language_modelling(rows, retriever, k, max_lm_examples, seed)
    return examples


def train_items(qa: pd.DataFrame, version: str) -> list[dict]:
    """The train-split questions of one corpus version."""
    return qa[(qa["version"] == version) & (qa["split"] == "train")].to_dict("records")


def new_knowledge(qa: pd.DataFrame, previous: str, version: str) -> list[dict]:
    """Train items of `version` that are new or whose answer changed since `previous`."""
    before = dict(
        zip(
            qa.loc[qa["version"] == previous, "id"],
            qa.loc[qa["version"] == previous, "answer"],
            strict=True,
        )
    )
    return [it for it in train_items(qa, version) if before.get(it["id"]) != it["answer"]]


def first_version_objective(
    objective: str, qa: pd.DataFrame, chunks: pd.DataFrame, version: str
) -> tuple[str, list[dict], set[str] | None]:
    """(objective, QA items, chunk ids for the lm objective) of the first corpus version.

    `auto` trains on questions when the version has train questions, else on the documents.
    """
    items = train_items(qa, version)
    chosen = objective if objective != "auto" else ("qa" if items else "lm")
    if chosen == "qa" and not items:
        raise ValueError(
            f"corpus version {version} has no train questions (qa.jsonl with split=train); "
            "set adapter-train.objective=lm to train on the documents alone"
        )
    if chosen == "lm":
        return chosen, [], set(chunks.loc[chunks["version"] == version, "chunk_id"])
    return chosen, items, None
