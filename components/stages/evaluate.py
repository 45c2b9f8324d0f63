"""evaluate: base model without retrieval, base model with retrieval (RAG), adapter with retrieval."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pandas as pd
from pydantic import Field

from components.adapters.builder import load_retro_model
from components.adapters.generation import generate
from components.adapters.prompting import build_prompt
from components.adapters.retro_model import rerank_hits
from components.config import StrictModel, parse_section
from components.evaluation.harness import markdown_table, run_system
from components.evaluation.metrics import exact_match, mean, recall_at_k, reciprocal_rank
from components.stages.common import (
    Layout,
    load_shared,
    read_table,
    stage_main,
    versions_in,
    write_json,
)
from components.stores.retriever import Retriever


class EvaluateParams(StrictModel):
    max_questions: int = Field(40, ge=0, description="0 evaluates every test question")
    max_new_tokens: int = Field(16, ge=1)
    batch_size: int = Field(8, ge=1)


def introduced_in(qa: pd.DataFrame) -> dict[tuple[str, str], str]:
    """The corpus version where each (question id, answer) first appeared: a revised fact
    belongs to the version that revised it."""
    first: dict[tuple[str, str], str] = {}
    for version in versions_in(qa):
        for row in qa[qa["version"] == version].itertuples():
            first.setdefault((row.id, row.answer), version)
    return first


def run(params: dict[str, Any], layout: Layout) -> dict[str, Any]:
    p = parse_section(EvaluateParams, params, "evaluate")
    model_params, retrieval = load_shared(params)
    qa = read_table(layout.qa, "ingest")
    latest = versions_in(read_table(layout.chunks, "chunk"))[-1]
    test = qa[(qa["version"] == latest) & (qa["split"] == "test")].sort_values("id").to_dict("records")
    if not test:  # documents only: nothing to score; register will not promote without a score
        note = f"corpus version {latest} has no held-out questions (qa.jsonl with split=test)"
        layout.metrics.mkdir(parents=True, exist_ok=True)
        (layout.metrics / "evaluate.md").write_text(note + "\n")
        (layout.metrics / "predictions.jsonl").write_text("")
        metrics = {"corpus_version": latest, "questions": 0, "k": retrieval.k, "note": note}
        write_json(layout.metrics / "evaluate.json", metrics)
        return metrics
    if p.max_questions and len(test) > p.max_questions:
        test = random.Random(model_params.seed).sample(test, p.max_questions)
    questions, golds = [t["question"] for t in test], [t["answer"] for t in test]

    model = load_retro_model(layout.current_adapter)
    tokenizer = model.tokenizer
    depth = model.first_stage_depth(retrieval.k)
    retriever = Retriever.load(layout.index, mode=retrieval.mode)
    retriever.retrieve(questions[:1], retrieval.k)  # load the embedder outside the timed part
    began = time.perf_counter()
    hits = retriever.retrieve(questions, depth)
    retrieve_ms = (time.perf_counter() - began) * 1000 / len(questions)
    reranked = rerank_hits(model, questions, hits, depth)
    ranking = {"first_stage": hits, **({"reranked": reranked} if model.reranker is not None else {})}
    retrieval_metrics = {}
    for name, rows in ranking.items():
        ids = [[h.payload["doc_id"] for h in row] for row in rows]
        retrieval_metrics[name] = {
            f"recall@{retrieval.k}": mean(
                [recall_at_k(d, t["doc_id"], retrieval.k) for d, t in zip(ids, test, strict=True)]
            ),
            "mrr": mean([reciprocal_rank(d, t["doc_id"]) for d, t in zip(ids, test, strict=True)]),
        }

    def top_texts(rows: list) -> dict[str, list[str]]:
        return {
            q: [h.payload["text"] for h in row[: retrieval.k]] for q, row in zip(questions, rows, strict=True)
        }

    rag_passages, passages = top_texts(hits), top_texts(reranked)
    doc_ids = [[h.payload["doc_id"] for h in row[: retrieval.k]] for row in reranked]
    used = retrieval_metrics.get("reranked", retrieval_metrics["first_stage"])
    recall, mrr = used[f"recall@{retrieval.k}"], used["mrr"]

    def answer(with_context: bool, adapter: bool):  # noqa: ANN202
        def fn(batch: list[str]) -> list[str]:
            if adapter:
                prompts = [model.prompt(q, passages[q]) for q in batch]
                memory = [passages[q] for q in batch]
                return generate(model, prompts, p.max_new_tokens, p.batch_size, memory)
            prompts = [build_prompt(tokenizer, q, rag_passages[q] if with_context else None) for q in batch]
            with model.base_only():
                return generate(model, prompts, p.max_new_tokens, p.batch_size)

        return fn

    extra = [retrieve_ms] * len(questions)
    results = [
        run_system("base (no retrieval)", answer(False, False), questions, golds, p.batch_size),
        run_system("base + retrieval (RAG)", answer(True, False), questions, golds, p.batch_size, extra),
        run_system("adapter + retrieval", answer(True, True), questions, golds, p.batch_size, extra),
    ]
    keys = ["base", "rag", "adapter"]
    introduced = introduced_in(qa)
    by_version: dict[str, list[float]] = {}
    for t, prediction in zip(test, results[2].predictions, strict=True):
        version = introduced[(t["id"], t["answer"])]
        by_version.setdefault(version, []).append(exact_match(prediction, t["answer"]))
    metrics = {
        "corpus_version": latest,
        "questions": len(test),
        "k": retrieval.k,
        f"recall@{retrieval.k}": recall,
        "mrr": mrr,
        "retrieval": retrieval_metrics,
        "retrieve_ms_per_question": retrieve_ms,
        # every version (task) seen so far: adapter EM on the facts it introduced or revised
        "adapter_by_version": {
            v: {"em": mean(scores), "questions": len(scores)}
            for v, scores in sorted(by_version.items(), key=lambda item: (len(item[0]), item[0]))
        },
        **{
            key: {
                "em": r.em,
                "f1": r.f1,
                "latency_ms_mean": r.latency_ms_mean,
                "latency_ms_p95": r.latency_ms_p95,
            }
            for key, r in zip(keys, results, strict=True)
        },
    }
    layout.metrics.mkdir(parents=True, exist_ok=True)
    (layout.metrics / "evaluate.md").write_text(
        markdown_table(results, retrieval_metrics, retrieval.k, len(test))
    )
    with (layout.metrics / "predictions.jsonl").open("w") as fh:
        for i, t in enumerate(test):
            fh.write(
                json.dumps(
                    {
                        "id": t["id"],
                        "question": t["question"],
                        "gold": t["answer"],
                        "retrieved_docs": doc_ids[i],
                        **{k: r.predictions[i] for k, r in zip(keys, results, strict=True)},
                    }
                )
                + "\n"
            )
    write_json(layout.metrics / "evaluate.json", metrics)
    return metrics


def main() -> None:
    stage_main("evaluate", run)


if __name__ == "__main__":
    main()
