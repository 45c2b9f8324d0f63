"""Three systems side by side on the held-out questions: the base model without retrieval, the base
model with retrieval (RAG), and the adapter with retrieval; plus recall and MRR of the retrieval,
at chunk level (the chunk holding the answer, components/evaluation/gold.py) and document level."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from components.core.artifacts import versions_in
from components.evaluation.gold import Gold, gold_counts
from components.evaluation.harness import SystemResult, markdown_table, paired_gain, run_system
from components.evaluation.intervals import Estimate
from components.evaluation.metrics import exact_match, mean, recall_at_k, reciprocal_rank, token_f1
from components.stores.base import citation

if TYPE_CHECKING:
    from components.adapters.retro_model import RetroModel
    from components.stores.retriever import Retriever

SYSTEM_NAMES = {
    "base": "base (no retrieval)",
    "rag": "base + retrieval (RAG)",
    "adapter": "adapter + retrieval",
}
SYSTEM_KEYS = list(SYSTEM_NAMES)
CURVE_K = 10  # the recall@k curve of evaluate.json and its plot goes to k = 10 (or retrieval.k)


def introduced_in(qa: pd.DataFrame) -> dict[tuple[str, str], str]:
    """The corpus version where each (question id, answer) first appeared: a revised fact
    belongs to the version that revised it."""
    first: dict[tuple[str, str], str] = {}
    for version in versions_in(qa):
        for row in qa[qa["version"] == version].itertuples():
            first.setdefault((row.id, row.answer), version)
    return first


def held_out(qa: pd.DataFrame, version: str, max_questions: int, seed: int) -> list[dict]:
    """The test questions of `version`, a seeded sample of `max_questions` when there are more.
    When the table has an `origin` column and human test questions, only those (a synthetic test
    split is scored only where no person wrote test questions)."""
    test = qa[(qa["version"] == version) & (qa["split"] == "test")]
    if "origin" in test and (test["origin"] == "human").any():
        test = test[test["origin"] == "human"]
    test = test.sort_values("id").to_dict("records")
    if max_questions and len(test) > max_questions:
        test = random.Random(seed).sample(test, max_questions)
    return test


def retrieval_scores(
    rows: list[list], test: list[dict], k: int, golds: list[Gold]
) -> dict[str, float | None]:
    """Recall@k and MRR of ranked hits, labelled by level: `chunk_` against each question's gold
    chunks, over the questions whose answer was located in chunks (`chunk_questions` of them);
    `doc_` against the gold document, over every question. Chunk figures are None when no
    answer was located."""
    ids = [[h.payload["doc_id"] for h in row] for row in rows]
    first_gold = first_gold_ranks(rows, golds)
    none_located = not first_gold  # e.g. every answer a yes/no label: chunk level does not apply
    return {
        f"chunk_recall@{k}": None
        if none_located
        else mean([float(i is not None and i < k) for i in first_gold]),
        "chunk_mrr": None
        if none_located
        else mean([0.0 if i is None else 1.0 / (i + 1) for i in first_gold]),
        "chunk_questions": len(first_gold),
        f"doc_recall@{k}": mean([recall_at_k(d, t["doc_id"], k) for d, t in zip(ids, test, strict=True)]),
        "doc_mrr": mean([reciprocal_rank(d, t["doc_id"]) for d, t in zip(ids, test, strict=True)]),
    }


def first_gold_ranks(rows: list[list], golds: list[Gold]) -> list[int | None]:
    """For each question whose answer was located in chunks, the 0-based rank of its first gold
    chunk among its hits (None when none was retrieved); questions with document gold are left out."""
    located = [(row, set(g.chunk_ids)) for row, g in zip(rows, golds, strict=True) if g.located]
    return [next((i for i, h in enumerate(row) if h.id in gold), None) for row, gold in located]


def recall_curve(rows: list[list], test: list[dict], golds: list[Gold], used_k: int) -> dict[str, Any]:
    """Recall@j for j = 1..len of the longest row, at chunk level (over the questions whose answer
    was located in chunks; None when none was) and at document level (over every question)."""
    depth = max((len(row) for row in rows), default=0)
    first_gold = first_gold_ranks(rows, golds)
    doc_rank = [
        next((i for i, h in enumerate(row) if h.payload["doc_id"] == t["doc_id"]), None)
        for row, t in zip(rows, test, strict=True)
    ]

    def share(ranks: list[int | None], j: int) -> float:
        return mean([float(r is not None and r < j) for r in ranks])

    ks = list(range(1, depth + 1))
    return {
        "k": ks,
        "used_k": used_k,
        "chunk": [share(first_gold, j) for j in ks] if first_gold else None,
        "chunk_questions": len(first_gold),
        "doc": [share(doc_rank, j) for j in ks],
        "doc_questions": len(test),
    }


@dataclass
class Comparison:
    """The evaluation of every system on the same test questions, with retrieval figures."""

    test: list[dict]
    results: list[SystemResult]
    retrieval: dict[str, dict[str, float]]
    retrieve_ms: float
    doc_ids: list[list[str]]
    golds: list[Gold]
    gains: dict[str, Estimate]  # adapter minus RAG, paired
    max_new_tokens: int
    changes: list[str] | None = None  # per question: new | revised | unchanged since the last version
    citations: list[list[dict]] | None = None  # per question: where the adapter's passages come from
    passages: list[list[str]] | None = None  # per question: the passages RAG and the adapter were given
    curve: dict[str, Any] | None = None  # recall@1..CURVE_K at chunk and document level


def compare_systems(
    model: RetroModel,
    retriever: Retriever,
    test: list[dict],
    golds: list[Gold],
    k: int,
    max_new_tokens: int,
    batch_size: int,
    seed: int = 0,
) -> Comparison:
    """Answer every held-out question with each system (the same passages for RAG and the
    adapter); `golds` are the questions' gold chunks."""
    from components.adapters.generation import generate
    from components.adapters.prompting import build_prompt

    questions, answers = [t["question"] for t in test], [t["answer"] for t in test]
    retriever.retrieve(questions[:1], k)  # load the embedder outside the timed part
    began = time.perf_counter()
    hits = retriever.retrieve(questions, k)
    retrieve_ms = (time.perf_counter() - began) * 1000 / len(questions)
    ranking = {"first_stage": hits}
    if retriever.reranker is not None:  # the index's reranker already ordered `hits`
        ranking = {"first_stage": retriever.first_stage(questions, k), "reranked": hits}
    scores = {name: retrieval_scores(rows, test, k, golds) for name, rows in ranking.items()}
    curve = recall_curve(retriever.retrieve(questions, max(CURVE_K, k)), test, golds, k)

    def top_texts(rows: list) -> dict[str, list[str]]:
        return {q: [h.payload["text"] for h in row[:k]] for q, row in zip(questions, rows, strict=True)}

    passages = top_texts(hits)

    def answer(with_context: bool, adapter: bool):  # noqa: ANN202
        def fn(batch: list[str]) -> list[str]:
            if adapter:
                prompts = [model.prompt(q, passages[q]) for q in batch]
                return generate(model, prompts, max_new_tokens, batch_size, [passages[q] for q in batch])
            prompts = [build_prompt(model.tokenizer, q, passages[q] if with_context else None) for q in batch]
            with model.base_only():
                return generate(model, prompts, max_new_tokens, batch_size)

        return fn

    extra = [retrieve_ms] * len(questions)
    given = [passages[q] for q in questions]
    results = [
        run_system(SYSTEM_NAMES["base"], answer(False, False), questions, answers, batch_size, seed=seed),
        run_system(
            SYSTEM_NAMES["rag"],
            answer(True, False),
            questions,
            answers,
            batch_size,
            extra,
            given,
            seed,
        ),
        run_system(
            SYSTEM_NAMES["adapter"], answer(True, True), questions, answers, batch_size, extra, given, seed
        ),
    ]
    doc_ids = [[h.payload["doc_id"] for h in row[:k]] for row in hits]
    citations = [[citation(h) for h in row[:k]] for row in hits]
    gains = paired_gain(results[2], results[1], seed)
    return Comparison(
        test,
        results,
        scores,
        retrieve_ms,
        doc_ids,
        golds,
        gains,
        max_new_tokens,
        citations=citations,
        passages=given,
        curve=curve,
    )


CHANGE_KINDS = ("new", "revised", "unchanged")


def label_changes(c: Comparison, qa: pd.DataFrame, version: str) -> None:
    """Mark each test question new, revised or unchanged against the corpus version before
    `version` (none before it: no labels), so forgetting is measured on every update."""
    versions = versions_in(qa)
    at = versions.index(version)
    if at == 0:
        return
    before = qa[qa["version"] == versions[at - 1]]
    answers = dict(zip(before["id"], before["answer"], strict=True))
    c.changes = [
        "new" if t["id"] not in answers else "revised" if answers[t["id"]] != t["answer"] else "unchanged"
        for t in c.test
    ]


def by_change(c: Comparison) -> dict[str, dict] | None:
    """Each system's EM and F1 over the new, the revised and the unchanged questions."""
    if c.changes is None:
        return None
    out = {}
    for kind in CHANGE_KINDS:
        picked = [i for i, label in enumerate(c.changes) if label == kind]
        out[kind] = {"questions": len(picked)} | {
            key: {
                "em": mean([r.em_scores[i] for i in picked]) if picked else None,
                "f1": mean([r.f1_scores[i] for i in picked]) if picked else None,
            }
            for key, r in zip(SYSTEM_KEYS, c.results, strict=True)
        }
    return out


def change_table(changes: dict[str, dict], since: str) -> str:
    """The by-change figures as a markdown table (F1 of each system)."""
    lines = [
        f"By change since {since} (F1; unchanged facts show forgetting):",
        "",
        "| questions | n | " + " | ".join(SYSTEM_KEYS) + " |",
        "|---|---:|" + "---:|" * len(SYSTEM_KEYS),
    ]
    for kind, row in changes.items():
        cells = ["n/a" if row[key]["f1"] is None else f"{row[key]['f1']:.3f}" for key in SYSTEM_KEYS]
        lines.append(f"| {kind} | {row['questions']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def closed_book(
    model: RetroModel, test: list[dict], max_new_tokens: int, batch_size: int, seed: int = 0
) -> dict[str, SystemResult]:
    """The base model and the adapter answering without any passage: what the weights alone hold
    (after a document is forgotten, what the adapter still answers about it unprompted)."""
    from components.adapters.generation import generate
    from components.adapters.prompting import build_prompt

    questions, answers = [t["question"] for t in test], [t["answer"] for t in test]

    def base(batch: list[str]) -> list[str]:
        with model.base_only():
            prompts = [build_prompt(model.tokenizer, q, None) for q in batch]
            return generate(model, prompts, max_new_tokens, batch_size)

    def adapter(batch: list[str]) -> list[str]:
        memory = [[] for _ in batch] if model.uses_memory else None
        return generate(model, [model.prompt(q, None) for q in batch], max_new_tokens, batch_size, memory)

    return {
        "base": run_system("base, closed book", base, questions, answers, batch_size, seed=seed),
        "adapter": run_system("adapter, closed book", adapter, questions, answers, batch_size, seed=seed),
    }


def comparison_metrics(c: Comparison, qa: pd.DataFrame, version: str, k: int) -> dict[str, Any]:
    """evaluate.json: the three systems with intervals, adapter minus RAG (paired), retrieval
    scores at chunk and document level, the gold kinds and adapter EM per corpus version."""
    introduced = introduced_in(qa)
    by_version: dict[str, list[float]] = {}
    for t, prediction in zip(c.test, c.results[2].predictions, strict=True):
        by_version.setdefault(introduced[(t["id"], t["answer"])], []).append(
            exact_match(prediction, t["answer"])
        )
    used = c.retrieval.get("reranked", c.retrieval["first_stage"])
    return {
        "corpus_version": version,
        "questions": len(c.test),
        "k": k,
        "max_new_tokens": c.max_new_tokens,
        **used,
        "gold": gold_counts(c.golds),
        "retrieval": c.retrieval,
        "recall_curve": c.curve,
        "retrieve_ms_per_question": c.retrieve_ms,
        # every version (task) seen so far: adapter EM on the facts it introduced or revised
        "adapter_by_version": {
            v: {"em": mean(scores), "questions": len(scores)}
            for v, scores in sorted(by_version.items(), key=lambda item: (len(item[0]), item[0]))
        },
        **{key: r.figures() for key, r in zip(SYSTEM_KEYS, c.results, strict=True)},
        "by_change": by_change(c),
        "adapter_minus_rag": {m: v for name, e in c.gains.items() for m, v in e.as_dict(name).items()},
    }


def write_report(c: Comparison, k: int, table: Path, predictions: Path) -> None:
    """The markdown table and one JSON line a question with every system's prediction."""
    table.parent.mkdir(parents=True, exist_ok=True)
    text = markdown_table(c.results, c.retrieval, k, len(c.test), c.gains)
    changes = by_change(c)
    table.write_text(text + ("\n" + change_table(changes, "the previous corpus version") if changes else ""))
    predictions.parent.mkdir(parents=True, exist_ok=True)
    with predictions.open("w") as fh:
        for i, t in enumerate(c.test):
            row = {
                "id": t["id"],
                "question": t["question"],
                "gold": t["answer"],
                "retrieved_docs": c.doc_ids[i],
                "citations": c.citations[i] if c.citations else [],
                "gold_kind": c.golds[i].kind,
                "change": c.changes[i] if c.changes else None,
                **{key: r.predictions[i] for key, r in zip(SYSTEM_KEYS, c.results, strict=True)},
            }
            fh.write(json.dumps(row) + "\n")


def read_predictions(path: Path) -> list[dict]:
    """The rows of predictions.jsonl (one a question: id, question, gold, each system's answer)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def system_scores(rows: list[dict], system: str, metric: str) -> list[float] | None:
    """Per-question `metric` (em | f1) of one system's answers in `rows`; None when any is missing."""
    score = exact_match if metric == "em" else token_f1
    if any(not isinstance(row.get(system), str) for row in rows):
        return None
    return [score(row[system], row["gold"]) for row in rows]


def write_no_questions(version: str, k: int, table: Path, predictions: Path) -> dict[str, Any]:
    """Reports for a version without held-out questions (nothing to score)."""
    note = f"corpus version {version} has no held-out questions (qa.jsonl with split=test)"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(note + "\n")
    predictions.write_text("")
    return {"corpus_version": version, "questions": 0, "k": k, "note": note}
