"""Fine-tune the sentence-transformers embedder on (question, gold chunk) pairs of one corpus.

sentence-transformers' own trainer with MultipleNegativesRankingLoss: every other passage of a
batch is a negative (in-batch negatives, batches without duplicate texts), and each pair brings
one mined hard negative, as in DPR: the chunk BM25 ranks highest for the question among the
chunks that are not gold. Gold is every chunk holding the answer (components/evaluation/gold.py),
so a chunk that also answers the question is never taught as wrong; that is why the mining is
done here and not by `util.mine_hard_negatives`, which can only guess false negatives from a
score margin (and drops every question whose gold chunk the embedder ranks low: the questions
fine-tuning is for). BM25 needs no embedding pass over the corpus before training.

The result is a plain SentenceTransformer folder plus `finetune.json` (what it was trained
from, and `model_hash`, which identifies it), kept in the embed stage's output folder: embeddings
and index versions name the embedder they were made with by that hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from components.embed.encoder import resolve_embedder

REPORT = "finetune.json"
log = logging.getLogger(__name__)


def training_pairs(
    questions: list[str], golds: list[set[str]], text_of: dict[str, str]
) -> tuple[list[str], list[str]]:
    """(anchors, positives): each question with the text of its first gold chunk (by id)."""
    anchors, positives = [], []
    for question, gold in zip(questions, golds, strict=True):
        known = sorted(g for g in gold if g in text_of)
        if known:
            anchors.append(question)
            positives.append(text_of[known[0]])
    return anchors, positives


def bm25_negatives(
    questions: list[str], golds: list[set[str]], chunk_ids: list[str], texts: list[str], positives: list[str]
) -> list[str]:
    """Per question, the text of the chunk BM25 ranks highest that is not gold and does not
    repeat the positive's text (a random other chunk when BM25 finds none)."""
    from components.data.lexical import build_bm25, tokenize_all

    index = build_bm25(texts)
    depth = min(len(texts), 16)
    ranked, _ = index.retrieve(tokenize_all(questions), k=depth, show_progress=False, n_threads=1)
    fallback = random.Random(0)
    negatives = []
    for row, gold, positive in zip(ranked.tolist(), golds, positives, strict=True):
        pick = next((j for j in row if chunk_ids[j] not in gold and texts[j] != positive), None)
        negatives.append(texts[pick if pick is not None else fallback.randrange(len(texts))])
    return negatives


def model_hash(folder: Path) -> str:
    """A content hash of a saved model's weight and config files (not of its report)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != REPORT):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def run_trainer(
    trainer_class: Any, arguments_class: Any, model: Any, data: Any, loss: Any, recipe: dict, **extra: Any
):  # noqa: ANN201
    """Train `model` on `data` with a sentence-transformers trainer on the CPU, no checkpoints or
    reports; `recipe`: epochs, batch_size, learning_rate, seed. Returns the trainer's output."""
    with tempfile.TemporaryDirectory() as scratch:
        args = arguments_class(
            output_dir=scratch,
            num_train_epochs=recipe["epochs"],
            per_device_train_batch_size=recipe["batch_size"],
            learning_rate=recipe["learning_rate"],
            warmup_steps=0.1,
            seed=recipe["seed"],
            save_strategy="no",
            report_to="none",
            logging_steps=10,
            use_cpu=True,
            **extra,
        )
        return trainer_class(model=model, args=args, train_dataset=data, loss=loss).train()


def finetune_embedder(
    base: str,
    anchors: list[str],
    positives: list[str],
    negatives: list[str] | None,
    out: Path,
    epochs: float = 1.0,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune `base` on (anchor, positive[, hard negative]) rows and save it to `out`;
    returns the report written beside it."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    began = time.perf_counter()
    model = SentenceTransformer(resolve_embedder(base), device="cpu")
    columns = {"anchor": anchors, "positive": positives}
    data = Dataset.from_dict(columns | ({"negative": negatives} if negatives else {}))
    recipe = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed}
    loss = MultipleNegativesRankingLoss(model)
    result = run_trainer(
        SentenceTransformerTrainer, SentenceTransformerTrainingArguments, model, data, loss, recipe,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
    )  # fmt: skip
    out = Path(out)
    model.save(str(out))
    report = {
        "base": base,
        "pairs": len(anchors),
        "hard_negatives": bool(negatives),
        "epochs": epochs,
        "steps": int(result.global_step),
        "train_loss": round(float(result.training_loss), 4),
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seconds": round(time.perf_counter() - began, 1),
        "model_hash": model_hash(out),
    }
    (out / REPORT).write_text(json.dumps(report, indent=2))
    log.info("fine-tuned %s on %d pairs in %.0f s", base, len(anchors), report["seconds"])
    return report
