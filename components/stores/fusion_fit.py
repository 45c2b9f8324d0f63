"""Fit how hybrid retrieval fuses its halves, on validation questions with known gold chunks.

Two methods, each with w_dense + w_bm25 = 1 on a grid from BM25 alone (w_dense = 0) to dense
alone (w_dense = 1):
- `rrf`, weighted reciprocal rank fusion: w_dense / (rrf_k + rank_dense) + w_bm25 / (rrf_k + rank_bm25);
- `score`, a weighted sum of each half's min-max normalised scores (a BM25 score far above the
  rest, an identifier found, counts as such; ranks do not show it).
Each (method, weight) is scored by the chunk-level MRR of the fused top 10, fused from the same
candidates serving fuses for `k` passages. Equal-weight RRF (the default) wins ties, so it is
kept unless something does better; among other ties the weight nearest equal wins, so neither
half is dropped without cause. Both rankings are computed once, so fitting costs one
retrieval of the questions.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from components.data.splits import fit_split, validation_split
from components.stores.rerank import mean_reciprocal_rank
from components.stores.retriever import EQUAL_WEIGHTS, FUSION_METHODS, Retriever, candidate_depth

TUNING_KEYS = {
    "fusion", "validation_share", "tune_min_questions", "gold_min_overlap", "k", "rrf_k",
    "rerank", "rerank_min_pairs", "rerank_epochs", "rerank_learning_rate",
}  # fmt: skip
"""The `retrieval` options a fit depends on: when one changes, the index stage refits."""
GRID = tuple(round(0.1 * i, 1) for i in range(11))
EQUAL = 0.5
MRR_DEPTH = 10


@dataclass
class FusionFit:
    """The chosen weights and what each weight on the grid scored."""

    weights: dict[str, Any]  # {"method": "rrf" | "score", "dense": w, "bm25": 1 - w}
    tuned: bool
    reason: str
    questions: int = 0
    mrr: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> dense weight -> MRR
    equal_mrr: float | None = None
    chosen_mrr: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fit as a plain dict, for the index manifest."""
        return asdict(self)


def question_digest(questions: list[str], golds: list[set[str]]) -> str:
    """Identifies a set of validation questions and their gold chunks (order does not matter)."""
    rows = sorted(f"{q}\t{' '.join(sorted(g))}" for q, g in zip(questions, golds, strict=True))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def fit_weights(
    retriever: Retriever,
    questions: list[str],
    golds: list[set[str]],
    min_questions: int = 20,
    k: int = 3,
) -> FusionFit:
    """The (method, dense weight) with the best chunk-level MRR@10 on `questions` (their gold chunk
    ids in `golds`) when `k` passages are retrieved; equal-weight RRF when the retriever is not
    hybrid or there are fewer than `min_questions` questions."""
    equal = dict(EQUAL_WEIGHTS)
    if retriever.mode != "hybrid":
        return FusionFit(equal, False, f"retrieval mode is {retriever.mode}: nothing to fuse")
    if len(questions) < min_questions:
        reason = f"{len(questions)} validation questions with a located gold chunk (< {min_questions})"
        return FusionFit(equal, False, reason, len(questions))
    dense, sparse = retriever.rankings(questions, candidate_depth(k))
    depth = max(MRR_DEPTH, k)
    mrr: dict[str, dict[str, float]] = {}
    for method in FUSION_METHODS:
        for w in GRID:
            weights = {"method": method, "dense": w, "bm25": round(1.0 - w, 1)}
            fused = [retriever.fuse(d, s, depth, weights) for d, s in zip(dense, sparse, strict=True)]
            mrr.setdefault(method, {})[f"{w:.1f}"] = mean_reciprocal_rank(fused, golds, depth)

    def preference(choice: tuple[str, float]) -> tuple:
        method, w = choice  # the best MRR; then equal RRF, then the weight nearest equal (both halves), RRF
        return (mrr[method][f"{w:.1f}"], (method, w) == ("rrf", EQUAL), -abs(w - EQUAL), method == "rrf")

    method, best = max(((m, w) for m in FUSION_METHODS for w in GRID), key=preference)
    return FusionFit(
        {"method": method, "dense": best, "bm25": round(1.0 - best, 1)},
        True,
        f"best chunk MRR@{depth} of {len(FUSION_METHODS) * len(GRID)} fusions on {len(questions)} "
        "validation questions",
        len(questions),
        mrr,
        mrr["rrf"][f"{EQUAL:.1f}"],
        mrr[method][f"{best:.1f}"],
    )


@dataclass
class FusionTask:
    """Fits a new index version's retrieval (the `tune` hook of build_version): its fusion on the
    validation questions and, where asked, a reranker trained on the other train questions and
    judged on the validation ones (components/stores/rerank.py)."""

    questions: list[str]
    golds: list[set[str]]
    options: dict[str, Any]  # TUNING_KEYS, the base embedder, the seed and the questions' digest
    fit: tuple[list[str], list[set[str]]] = ([], [])
    text_of: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, qa: pd.DataFrame, chunks: pd.DataFrame, version: str, retrieval: Any, base: str, seed: int
    ) -> FusionTask:
        """The train questions of `version` located in `chunks`, split into validation and fit,
        with `retrieval`'s options."""
        from components.evaluation.gold import located_golds

        split = validation_split(qa, version, retrieval.validation_share)
        questions, golds = located_golds(split, chunks, retrieval.gold_min_overlap)
        fit = located_golds(
            fit_split(qa, version, retrieval.validation_share), chunks, retrieval.gold_min_overlap
        )
        options = {key: getattr(retrieval, key) for key in sorted(TUNING_KEYS)}
        options |= {"base": base, "seed": seed, "questions": question_digest(questions, golds)}
        text_of = dict(zip(chunks["chunk_id"], chunks["text"], strict=True))
        return cls(questions, golds, options, fit, text_of)

    def changed_since(self, fusion: dict[str, Any]) -> bool:
        """True when a version's recorded fusion was fitted with other options. Questions alone
        do not count: a corpus version that changes only its questions keeps its index version
        (a version with new chunks is refitted as it is built)."""
        recorded = {k: v for k, v in fusion.get("settings", {}).items() if k != "questions"}
        return recorded != {k: v for k, v in self.options.items() if k != "questions"}

    def __call__(self, retriever: Retriever, staging: Path) -> dict[str, Any]:
        """The manifest's `fusion` (fitted, or equal-weight RRF when `fusion` is equal) and
        `rerank` (a reranker trained into `staging`, kept or not)."""
        from components.stores.rerank import RERANKER, fit_reranker

        o = self.options
        if o["fusion"] == "equal":
            fit = {"weights": dict(EQUAL_WEIGHTS), "tuned": False, "reason": "retrieval.fusion is equal"}
        else:
            fitted = fit_weights(retriever, self.questions, self.golds, o["tune_min_questions"], o["k"])
            fit = fitted.to_dict()
        retriever.weights = dict(fit["weights"])
        validation = (self.questions, self.golds)
        rerank = fit_reranker(retriever, self.fit, validation, self.text_of, Path(staging) / RERANKER, o)
        return {"fusion": {**fit, "settings": self.options}, "rerank": rerank}
