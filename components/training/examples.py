"""Training examples: a question, its answer and the passages retrieved for it."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from components.stores.retriever import Retriever


@dataclass
class Example:
    qid: str
    question: str
    answer: str
    doc_id: str
    passages: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


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
        found = any(h.payload.get("doc_id") == item["doc_id"] for h in hits)
        candidates = gold_chunks.get(item["doc_id"], [])
        if ensure_gold and not found and candidates:
            gold = next((c for c in candidates if item["answer"] in c), candidates[0])
            if len(passages) >= k:
                passages[rng.randrange(len(passages))] = gold
            else:
                passages.insert(rng.randrange(len(passages) + 1), gold)
        examples.append(Example(item["id"], item["question"], item["answer"], item["doc_id"], passages))
    return examples
