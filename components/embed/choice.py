"""Which embedder the embed stage encodes with: the configured one, or a copy fine-tuned on the
corpus once per lineage (`retrieval.finetune`).

A lineage is one corpus source with one base embedder and one fine-tuning recipe. Its first
build fine-tunes (when asked, and in `auto` when there are enough pairs); later corpus versions of
the same lineage reuse that embedder, so an update embeds only its new chunks and never forces a
full rebuild. Fine-tuning again is an explicit choice (`retro reindex --finetune` removes the
fine-tuned embedder): a new embedder, whose hash differs, makes the index stage build in full.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from components.embed.finetune import REPORT, bm25_negatives, finetune_embedder, training_pairs

FINETUNED = "finetuned"
"""The fine-tuned embedder's folder inside the embed stage's output folder."""


@dataclass
class Embedder:
    """What encode() loads (`name`), and what identifies it (`identity`)."""

    name: str
    base: str
    model_hash: str | None = None
    finetune: dict[str, Any] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        """The base name, or `base+finetuned@hash`: vectors and indexes made with another identity
        are never mixed with these."""
        return self.base if self.model_hash is None else f"{self.base}+finetuned@{self.model_hash}"


def embedder_in_use(folder: Path, default: str) -> tuple[str, str]:
    """(identity, what encode() loads) of the embedder the embed stage used for the table in
    `folder`: its fine-tuned embedder there, or the named one (`default` before any embed run).
    The identity names the engine too when it is not torch (`name@onnx-int8`)."""
    from components.embed.table import EmbeddingTable

    recorded = EmbeddingTable.manifest(folder)
    if recorded.get("embedder_hash"):
        return recorded["embedder"], str(Path(folder) / FINETUNED)
    name = recorded.get("embedder", default)
    return name, recorded.get("embedder_name", name)


def backend_in_use(folder: Path) -> str:
    """The engine the embed stage encoded the table in `folder` with (embed.backend, quantize)."""
    return embedder_record(folder)["embed_backend"]


def embedder_record(folder: Path) -> dict[str, Any]:
    """What an index version records of the embedder of the table in `folder`: the fine-tuned
    embedder's hash (or None) and the engine."""
    from components.embed.table import EmbeddingTable

    recorded = EmbeddingTable.manifest(folder)
    return {
        "embedder_hash": recorded.get("embedder_hash"),
        "embed_backend": recorded.get("embed_backend", "torch"),
    }


def engine_identity(identity: str, backend: str) -> str:
    """An embedder identity with its engine: vectors of another engine are never mixed in."""
    return identity if backend == "torch" else f"{identity}@{backend}"


def finetuned_embedder(folder: Path, lineage: dict[str, Any]) -> Embedder | None:
    """The fine-tuned embedder kept in `folder` when it was made for this lineage."""
    report_path = Path(folder) / FINETUNED / REPORT
    if not report_path.exists():
        return None
    report = json.loads(report_path.read_text())
    if report.get("lineage") != lineage:
        return None
    return Embedder(
        str(Path(folder) / FINETUNED), lineage["base"], report["model_hash"], {**report, "state": "reused"}
    )


def choose_embedder(
    folder: Path,
    lineage: dict[str, Any],
    mode: str,
    min_pairs: int,
    questions: pd.DataFrame,
    chunks: pd.DataFrame,
    golds: list[set[str]],
    recipe: dict[str, Any],
) -> Embedder:
    """The embedder for this run: `mode` off keeps the base; a fine-tuned embedder of this lineage
    is reused; else one is fine-tuned on the (question, gold chunk) pairs (`questions` rows with a
    gold in `golds`, over `chunks`) when mode is on, or auto with at least `min_pairs` pairs.
    `recipe`: finetune_embedder's epochs, batch_size, learning_rate and seed."""
    base = lineage["base"]
    if mode == "off":
        return Embedder(base, base, finetune={"state": "off", "reason": "retrieval.finetune is off"})
    kept = finetuned_embedder(folder, lineage)
    if kept is not None:
        return kept
    text_of = dict(zip(chunks["chunk_id"], chunks["text"], strict=True))
    anchors, positives = training_pairs(questions["question"].tolist(), golds, text_of)
    if len(anchors) < (min_pairs if mode == "auto" else 1):
        reason = f"{len(anchors)} (question, gold chunk) pairs, fewer than finetune_min_pairs {min_pairs}"
        return Embedder(base, base, finetune={"state": "base", "reason": reason, "pairs": len(anchors)})
    paired = [g for g in golds if any(c in text_of for c in g)]
    ids, texts = chunks["chunk_id"].tolist(), chunks["text"].tolist()
    negatives = bm25_negatives(anchors, paired, ids, texts, positives)
    target, staging = Path(folder) / FINETUNED, Path(folder) / f"{FINETUNED}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    report = finetune_embedder(base, anchors, positives, negatives, staging, **recipe)
    report["lineage"] = lineage
    (staging / REPORT).write_text(json.dumps(report, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return Embedder(str(target), base, report["model_hash"], {**report, "state": "trained"})


def embedder_for(params: Any, paths: Any, chunks: pd.DataFrame) -> Embedder:
    """`choose_embedder` for the pipeline's params and layout: the lineage is the corpus source,
    the base embedder and the recipe; pairs are the train questions of the newest corpus version
    outside the validation share (which fits fusion), with their located gold chunks."""
    from components.core.artifacts import read_table, versions_in
    from components.data.splits import fit_split
    from components.evaluation.gold import located_golds

    r, seed = params.retrieval, params.model.seed
    recipe = {
        "epochs": r.finetune_epochs,
        "batch_size": r.finetune_batch_size,
        "learning_rate": r.finetune_learning_rate,
        "seed": seed,
    }
    lineage = {"source": params.ingest.source, "base": params.model.embedder, "recipe": recipe}
    if r.finetune == "off" or finetuned_embedder(paths.embeddings, lineage) is not None:
        return choose_embedder(paths.embeddings, lineage, r.finetune, 0, pd.DataFrame(), chunks, [], recipe)
    latest = versions_in(chunks)[-1]
    part = chunks[chunks["version"] == latest]
    fit = fit_split(read_table(paths.qa, "ingest"), latest, r.validation_share)
    questions, golds = located_golds(fit, part, r.gold_min_overlap)
    rows = pd.DataFrame({"question": questions})
    return choose_embedder(
        paths.embeddings, lineage, r.finetune, r.finetune_min_pairs, rows, part, golds, recipe
    )
