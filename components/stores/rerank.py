"""A cross-encoder reranker fine-tuned on the corpus, kept only where it beats the first stage.

The cross-encoder starts from the embedder's own weights (the packaged MiniLM by default, with a
new one-logit head) and is trained with sentence-transformers' CrossEncoderTrainer and binary
cross-entropy: each training question with its gold chunk (label 1) and the first-stage hits
ranked highest that are not gold (label 0), the mistakes it is there to fix. It reorders the
top `RERANK_DEPTH` first-stage hits. Whether it stays is measured: on the validation questions
its MRR@10 must beat the first stage's (`retrieval.rerank: auto`).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from components.embed.encoder import resolve_embedder
from components.embed.finetune import run_trainer
from components.stores.base import Hit

RERANKER = "reranker"
"""The reranker's folder inside an index snapshot."""
RERANK_DEPTH = 20
NEGATIVES_PER_QUESTION = 3
log = logging.getLogger(__name__)


def mean_reciprocal_rank(rankings: list[list[Hit]], golds: list[set[str]], depth: int = 10) -> float:
    """Mean over queries of 1 / rank of the first gold hit in the top `depth` (0 when none)."""
    ranks = [
        next((1.0 / rank for rank, h in enumerate(hits[:depth], start=1) if h.id in gold), 0.0)
        for hits, gold in zip(rankings, golds, strict=True)
    ]
    return round(sum(ranks) / len(ranks), 4) if ranks else 0.0


class CrossEncoderReranker:
    """Scores (question, passage) pairs with a sentence-transformers CrossEncoder folder."""

    def __init__(self, path: str | Path) -> None:
        from sentence_transformers.cross_encoder import CrossEncoder

        self.path = str(path)
        self.model = CrossEncoder(self.path, num_labels=1, device="cpu")

    def rerank(self, question: str, hits: list[Hit], k: int) -> list[Hit]:
        """The top k of `hits` by the cross-encoder's score (payloads carry the passage text)."""
        if not hits:
            return []
        scores = self.model.predict(
            [(question, h.payload.get("text", "")) for h in hits], show_progress_bar=False
        )
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]
        return [Hit(hits[i].id, float(scores[i]), hits[i].payload) for i in order]


def training_rows(
    questions: list[str], golds: list[set[str]], candidates: list[list[Hit]], text_of: dict[str, str]
) -> dict[str, list]:
    """Columns question / passage / label: each question's first gold chunk (1) and its highest
    first-stage hits that are not gold (0, up to NEGATIVES_PER_QUESTION)."""
    rows: dict[str, list] = {"question": [], "passage": [], "label": []}
    for question, gold, hits in zip(questions, golds, candidates, strict=True):
        known = sorted(g for g in gold if g in text_of)
        if not known:
            continue
        negatives = [h.id for h in hits if h.id not in gold][:NEGATIVES_PER_QUESTION]
        for chunk_id, label in [(known[0], 1.0)] + [(n, 0.0) for n in negatives]:
            rows["question"].append(question)
            rows["passage"].append(text_of[chunk_id])
            rows["label"].append(label)
    return rows


def train_reranker(
    base: str,
    rows: dict[str, list],
    out: Path,
    epochs: float = 1.0,
    batch_size: int = 16,
    learning_rate: float = 3e-5,
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune a cross-encoder from `base` (an embedder name or folder) on `rows`; save it to
    `out` and return what was trained."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    began = time.perf_counter()
    model = CrossEncoder(resolve_embedder(base), num_labels=1, device="cpu")
    recipe = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed}
    data, loss = Dataset.from_dict(rows), BinaryCrossEntropyLoss(model)
    result = run_trainer(CrossEncoderTrainer, CrossEncoderTrainingArguments, model, data, loss, recipe)
    model.save(str(out))
    report = {
        "base": base,
        "rows": len(rows["label"]),
        "positives": int(sum(rows["label"])),
        "steps": int(result.global_step),
        "train_loss": round(float(result.training_loss), 4),
        "seconds": round(time.perf_counter() - began, 1),
    }
    log.info("trained a cross-encoder reranker on %d rows in %.0f s", report["rows"], report["seconds"])
    return report


def fit_reranker(
    retriever: Any,
    fit: tuple[list[str], list[set[str]]],
    validation: tuple[list[str], list[set[str]]],
    text_of: dict[str, str],
    out: Path,
    options: dict[str, Any],
) -> dict[str, Any]:
    """Train a reranker on the `fit` questions (and gold chunk ids) and keep it on `retriever`
    when `options["rerank"]` is on, or auto and it beats the first stage's MRR@10 on the
    `validation` questions. A reranker the retriever carries from its parent version is kept as
    it is. `options`: rerank, rerank_min_pairs, tune_min_questions, base and the training recipe
    (rerank_epochs, rerank_learning_rate, seed). Returns what happened, for the manifest."""
    mode = options["rerank"]
    if mode == "off":
        retriever.reranker = None
        return {"state": "off", "kept": False, "reason": "retrieval.rerank is off"}
    if retriever.reranker is not None:
        return {"state": "reused", "kept": True, "reason": "the parent version's reranker"}
    questions, golds = fit
    least = options["rerank_min_pairs"] if mode == "auto" else 1
    if len(questions) < least or (mode == "auto" and len(validation[0]) < options["tune_min_questions"]):
        reason = f"{len(questions)} training, {len(validation[0])} validation questions: too few"
        return {"state": "none", "kept": False, "reason": reason}
    rows = training_rows(questions, golds, retriever.first_stage(questions, RERANK_DEPTH), text_of)
    recipe = {"epochs": options["rerank_epochs"], "learning_rate": options["rerank_learning_rate"]}
    report = train_reranker(options["base"], rows, out, seed=options["seed"], **recipe)
    reranker = CrossEncoderReranker(out)
    first = retriever.first_stage(validation[0], RERANK_DEPTH)
    reranked = [reranker.rerank(q, hits, 10) for q, hits in zip(validation[0], first, strict=True)]
    before, after = mean_reciprocal_rank(first, validation[1]), mean_reciprocal_rank(reranked, validation[1])
    kept = mode == "on" or after > before
    retriever.reranker = reranker if kept else None
    if not kept:
        shutil.rmtree(out, ignore_errors=True)
    verdict = "beats" if after > before else "does not beat"
    return {
        **report,
        "state": "trained",
        "kept": kept,
        "first_stage_mrr": before,
        "reranked_mrr": after,
        "validation_questions": len(validation[0]),
        "reason": f"reranked MRR@10 {after} {verdict} the first stage's {before} on the validation questions",
    }
