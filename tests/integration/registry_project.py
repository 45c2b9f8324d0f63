"""A project registered in a real MLflow SQLite store: a tiny adapter and a MiniLM index, for the
registry and serving tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from components.adapters.base_model import load_base_model
from components.adapters.builder import build_retro_model
from components.core.paths import Paths
from components.embed.encoder import encode
from components.stages import register
from components.stores.manifest import IndexManifest
from components.stores.retriever import Retriever
from tests.conftest import run_stage

TEXTS = ["Zorvex is made by Talmir Labs.", "The Varnholt Act dates from 1999."]


QUESTIONS = 20
RAG_RIGHT = 4  # plain RAG answers the first 4 questions right (F1 0.2)


def _predictions(adapter_f1: float) -> list[dict]:
    """evaluate's predictions: the adapter right on the first adapter_f1 x 20 questions."""
    right = round(adapter_f1 * QUESTIONS)
    return [
        {
            "id": f"q{i}",
            "question": f"What is the code of item {i}?",
            "gold": f"K{i}",
            "base": "unknown",
            "rag": f"K{i}" if i < RAG_RIGHT else "unknown",
            "adapter": f"K{i}" if i < right else "unknown",
        }
        for i in range(QUESTIONS)
    ]


def _metrics(adapter_f1: float, base_f1: float = 0.1) -> dict:
    system = lambda f1: {"em": f1, "f1": f1, "latency_ms_mean": 10.0, "latency_ms_p95": 12.0}  # noqa: E731
    return {
        "k": 3,
        "chunk_recall@3": 0.8,
        "doc_recall@3": 0.9,
        "corpus_version": "v1",
        "questions": QUESTIONS,
        "max_new_tokens": 4,
        "base": system(base_f1),
        "rag": system(RAG_RIGHT / QUESTIONS),
        "adapter": system(adapter_f1),
    }


def make_project(
    root: Path,
    tiny_model: Path,
    texts: list[str] = TEXTS,
    content_hash: str = "abc123",
    embedder: str = "all-MiniLM-L6-v2",
    embedder_hash: str | None = None,
    metadata: list[dict] | None = None,
) -> Paths:
    """A project folder with a built index and a fresh tiny adapter, ready for `register`;
    `embedder` a name or a fine-tuned embedder's folder (then `embedder_hash` is its hash);
    `metadata` more payload fields per text (a tenant, a domain)."""
    layout = Paths(root)
    ids = [f"c{i + 1}" for i in range(len(texts))]
    payloads = [{"doc_id": "ab"[i] if i < 2 else f"d{i}"} for i in range(len(texts))]
    for payload, extra in zip(payloads, metadata or [{}] * len(texts), strict=True):
        payload.update(extra)
    retriever = Retriever.build(ids, texts, encode(texts, embedder), payloads, embedder)
    shutil.rmtree(layout.index, ignore_errors=True)
    retriever.save(layout.index)
    IndexManifest(
        content_hash=content_hash,
        embedder="all-MiniLM-L6-v2"
        if embedder_hash is None
        else f"all-MiniLM-L6-v2+finetuned@{embedder_hash}",
        embedder_hash=embedder_hash,
        dim=384,
        count=len(texts),
        corpus_version="v1",
        store="faiss",
        retrieval_mode="hybrid",
        documents=len(texts),
    ).write(layout.index)
    base, tokenizer = load_base_model(str(tiny_model))
    build_retro_model(base, tokenizer, "lora", {"r": 2}, max_trainable_share=None).save(
        layout.current_adapter, {"base_model": str(tiny_model), "method": "lora", "retrieval": {"k": 2}}
    )
    layout.dvc_lock.write_text(
        "schema: '2.0'\nstages:\n  index:\n    outs:\n    - path: data/index\n      md5: 0123.dir\n"
    )
    return layout


def register_pair(layout: Paths, params: dict, adapter_f1: float) -> dict:
    """Register the project's adapter and index as a linked pair, with evaluate's figures and
    predictions as they would be for an adapter at this F1 (the gate reads the predictions)."""
    write_evaluation(layout, adapter_f1)
    return run_stage(register, params, layout.root)


def write_evaluation(layout: Paths, adapter_f1: float) -> None:
    """evaluate's figures and predictions in `layout` (a domain's own with `Paths.for_domain`)."""
    layout.metrics_of("evaluate").parent.mkdir(parents=True, exist_ok=True)
    layout.metrics_of("evaluate").write_text(json.dumps(_metrics(adapter_f1)))
    rows = _predictions(adapter_f1)
    layout.predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
