"""evaluate's work: the three systems on held-out questions with the adapter of a layout, and
each per-domain adapter on its own domain's questions and passages."""

from __future__ import annotations

import shutil
from typing import Any

import pandas as pd

from components.core.artifacts import versions_in, write_json
from components.core.params import PipelineParams
from components.core.paths import Paths
from components.data.domains import domain_filter, questions_of, read_document_domains, read_domains
from components.evaluation.abstention import abstention_figures
from components.evaluation.budget import answer_token_budget
from components.evaluation.compare import (
    compare_systems,
    comparison_metrics,
    held_out,
    label_changes,
    write_no_questions,
    write_report,
)
from components.evaluation.gold import GoldFinder
from components.synthesis.questions import eval_question_source


def evaluate_one(
    params: PipelineParams, paths: Paths, qa: pd.DataFrame, chunks: pd.DataFrame, retriever: Any
) -> dict[str, Any]:
    """The three systems on the newest version's test questions of `qa`, with the adapter in
    `paths.current_adapter`; the report and predictions go to `paths`."""
    p, k = params.evaluate, params.retrieval.k
    latest = versions_in(chunks)[-1]
    test = held_out(qa, latest, p.max_questions, params.model.seed)
    if not test:  # documents only: nothing to score; register will not promote without a score
        return write_no_questions(latest, k, paths.evaluation_table, paths.predictions)
    source = {"eval_questions": eval_question_source(qa, latest)}
    from components.adapters.builder import load_retro_model
    from components.adapters.kv_index import KVFolder
    from components.adapters.precision import LoadOptions

    model = load_retro_model(paths.current_adapter, options=LoadOptions.from_params(params.model))
    KVFolder(paths.chunk_kv, params.index.chunk_kv_budget_gb).attach(model)
    finder = GoldFinder(chunks[chunks["version"] == latest], params.retrieval.gold_min_overlap)
    golds = [finder.find(t["doc_id"], t["answer"]) for t in test]
    budget = p.max_new_tokens
    if budget is None:
        answers = qa.loc[(qa["version"] == latest) & (qa["split"] == "train"), "answer"].tolist()
        budget = answer_token_budget(model.tokenizer, answers, p.answer_percentile)
    seed = params.model.seed
    comparison = compare_systems(model, retriever, test, golds, k, budget, p.batch_size, seed)
    label_changes(comparison, qa, latest)
    write_report(comparison, k, paths.evaluation_table, paths.predictions)
    cap = "evaluate.max_new_tokens" if p.max_new_tokens else f"p{p.answer_percentile:g} of train answers"
    metrics = comparison_metrics(comparison, qa, latest, k) | {"max_new_tokens_source": cap} | source
    if params.serve.abstain.mode != "off":  # what the service's abstention would do to these answers
        predictions = comparison.results[2].predictions
        questions, answers = [t["question"] for t in test], [t["answer"] for t in test]
        given = comparison.passages or [[] for _ in test]
        figures = abstention_figures(
            params.serve.abstain, questions, given, predictions, answers, retriever.embed
        )
        metrics["abstention"] = figures
    return metrics


def evaluate_domains(
    params: PipelineParams, paths: Paths, qa: pd.DataFrame, chunks: pd.DataFrame, retriever: Any
) -> dict[str, dict[str, Any]]:
    """Each domain adapter on its domain's questions and passages; its report, predictions and
    metrics in `paths.domain_evaluation/<domain>` (what register gates it on)."""
    from components.stores.retriever import ScopedRetriever

    domains = read_domains(paths.domain_adapters)
    shutil.rmtree(paths.domain_evaluation, ignore_errors=True)
    paths.domain_evaluation.mkdir(parents=True)
    if not domains:
        return {}
    of = read_document_domains(paths.documents)
    figures = {}
    for domain in domains:
        scoped = paths.for_domain(domain)
        scoped.evaluation_table.parent.mkdir(parents=True, exist_ok=True)
        own = ScopedRetriever(retriever, domain_filter(domain))
        figures[domain] = evaluate_one(params, scoped, questions_of(qa, of, domain), chunks, own)
        write_json(scoped.metrics_of("evaluate"), figures[domain])
    return figures


def domain_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of one domain adapter's evaluation."""
    summary = {"questions": metrics.get("questions", 0)}
    for system in ("rag", "adapter"):
        figures = metrics.get(system) or {}
        summary |= {f"{system}_{m}": figures[m] for m in ("f1", "em") if m in figures}
    return summary
