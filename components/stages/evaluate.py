"""evaluate: base model without retrieval, base model with retrieval (RAG), adapter with retrieval."""

from __future__ import annotations

from typing import Any

from components.core.artifacts import read_table, versions_in
from components.core.params import PipelineParams
from components.core.paths import Paths
from components.data.chunking import read_chunks
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
from components.stages.entry import stage_main
from components.stores.manifest import IndexManifest
from components.synthesis.questions import eval_question_source


def run(params: PipelineParams, paths: Paths) -> dict[str, Any]:
    p, k = params.evaluate, params.retrieval.k
    qa = read_table(paths.questions, "synthesize")
    chunks = read_chunks(paths.chunks)
    latest = versions_in(chunks)[-1]
    test = held_out(qa, latest, p.max_questions, params.model.seed)
    if not test:  # documents only: nothing to score; register will not promote without a score
        return write_no_questions(latest, k, paths.evaluation_table, paths.predictions)
    source = {"eval_questions": eval_question_source(qa, latest)}
    from components.adapters.builder import load_retro_model
    from components.adapters.kv_index import KVFolder
    from components.stores.retriever import Retriever

    IndexManifest.read(paths.index)  # refuses a snapshot of another schema
    model = load_retro_model(paths.current_adapter)
    KVFolder(paths.chunk_kv, params.index.chunk_kv_budget_gb).attach(model)
    retriever = Retriever.load(paths.index, mode=params.retrieval.mode)
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


def main() -> None:
    stage_main("evaluate", run)


if __name__ == "__main__":
    main()
