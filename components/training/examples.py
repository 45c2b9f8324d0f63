"""Training examples: a question, its answer and the passages retrieved for it."""

from __future__ import annotations

import random
from contextlib import closing
from dataclasses import asdict, dataclass, field

import pandas as pd

from components.core.params import PipelineParams
from components.core.paths import Paths
from components.evaluation.gold import DEFAULT_MIN_OVERLAP, GoldFinder
from components.stores.retriever import Retriever


@dataclass
class Example:
    """One training example: a question, its answer and retrieved passages."""

    qid: str
    question: str
    answer: str
    doc_id: str
    passages: list[str]
    passage_doc_ids: list[str] = field(default_factory=list)
    passage_chunk_ids: list[str] = field(default_factory=list)
    gold_chunk_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The example as a plain dict."""
        return asdict(self)

    @property
    def gold_index(self) -> int | None:
        """Position of the first gold passage (a chunk holding the answer when the gold is known
        by chunk, else any passage of the gold document); None when none was retrieved."""
        if self.gold_chunk_ids and self.passage_chunk_ids:
            gold = set(self.gold_chunk_ids)
            return next((i for i, c in enumerate(self.passage_chunk_ids) if c in gold), None)
        return self.passage_doc_ids.index(self.doc_id) if self.doc_id in self.passage_doc_ids else None


def with_retrieval(
    items: list[dict],
    retriever: Retriever,
    k: int,
    gold: GoldFinder,
    ensure_gold: bool = True,
    seed: int = 0,
) -> list[Example]:
    """Attach the top-k retrieved passages to each QA item.

    The gold of each item is found by `gold` (components/evaluation/gold.py: the chunk holding
    the answer span, else the best token overlap, else the whole document). With `ensure_gold`,
    when no retrieved passage is gold, one is replaced by the first gold chunk (RAFT-style: the
    model learns to find the answer among distractors instead of guessing when the context
    lacks it).
    """
    if not items:
        return []
    rng = random.Random(seed)
    results = retriever.retrieve([it["question"] for it in items], k)
    examples = []
    for item, hits in zip(items, results, strict=True):
        passages = [h.payload["text"] for h in hits]
        doc_ids = [str(h.payload.get("doc_id")) for h in hits]
        chunk_ids = [str(h.id) for h in hits]
        found = gold.find(item["doc_id"], item["answer"])
        example = Example(
            item["id"], item["question"], item["answer"], item["doc_id"], passages, doc_ids, chunk_ids,
            list(found.chunk_ids),
        )  # fmt: skip
        if ensure_gold and found.chunk_ids and example.gold_index is None:
            first = found.chunk_ids[0]
            at = rng.randrange(len(passages)) if len(passages) >= k else rng.randrange(len(passages) + 1)
            if len(passages) >= k:
                passages[at], doc_ids[at], chunk_ids[at] = gold.text_of[first], item["doc_id"], first
            else:
                passages.insert(at, gold.text_of[first])
                doc_ids.insert(at, item["doc_id"])
                chunk_ids.insert(at, first)
        examples.append(example)
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
    min_overlap: float = DEFAULT_MIN_OVERLAP,
) -> list[Example]:
    """Training examples of one corpus version, passages retrieved from that version's chunks.

    QA items become question/answer examples; `lm_chunk_ids` (for corpora without questions)
    become continuation examples on those chunks (the unsupervised objective).
    """
    part = chunks[chunks["version"] == version].sort_values(["doc_id", "position"])
    gold = GoldFinder(part, min_overlap)
    examples = with_retrieval(items, retriever, k, gold, ensure_gold=ensure_gold, seed=seed)
    if lm_chunk_ids:
        rows = part[part["chunk_id"].isin(lm_chunk_ids)].to_dict("records")
        examples += language_modelling(rows, retriever, k, max_lm_examples, seed)
    return examples


def examples_of_version(
    params: PipelineParams,
    paths: Paths,
    chunks: pd.DataFrame,
    version: str,
    items: list[dict],
    lm_chunk_ids: set[str] | None = None,
    ensure_gold: bool = True,
    where: dict | None = None,
) -> list[Example]:
    """`version_examples` with the passages of that version's retriever, as the pipeline's
    params configure it (adapter-train and continual-update); `where` keeps the passages of the
    documents it admits (a domain's adapter reads its own domain's)."""
    from components.stores.retriever import ScopedRetriever
    from components.stores.versions import version_retriever

    model, retrieval, index = params.model, params.retrieval, params.index
    opened = version_retriever(
        paths.index, paths.embeddings, chunks, version, model.embedder, retrieval.mode, retrieval.rrf_k,
        index.store, index.store_params,
    )  # fmt: skip
    with closing(opened) as retriever:
        return version_examples(
            chunks, version, items, ScopedRetriever(retriever, where), retrieval.k, model.seed,
            ensure_gold, lm_chunk_ids, params.adapter_train.max_lm_examples, retrieval.gold_min_overlap,
        )  # fmt: skip


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
