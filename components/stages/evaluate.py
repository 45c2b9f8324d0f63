"""evaluate: base model without retrieval, base model with retrieval (RAG), adapter with retrieval."""

from __future__ import annotations

from typing import Any

from components.core.artifacts import read_table, versions_in
from components.core.params import PipelineParams
from components.core.paths import Paths
from components.data.chunking import read_chunks
from components.evaluation.compare import (
    compare_systems,
    comparison_metrics,
    held_out,
    write_no_questions,
    write_report,
)
from components.stages.entry import stage_main
from components.stores.manifest import IndexManifest


def run(params: PipelineParams, paths: Paths) -> dict[str, Any]:
    p, k = params.evaluate, params.retrieval.k
    qa = read_table(paths.qa, "ingest")
    latest = versions_in(read_chunks(paths.chunks))[-1]
    test = held_out(qa, latest, p.max_questions, params.model.seed)
    if not test:  # documents only: nothing to score; register will not promote without a score
        return write_no_questions(latest, k, paths.evaluation_table, paths.predictions)
    from components.adapters.builder import load_retro_model
    from components.stores.retriever import Retriever

    IndexManifest.read(paths.index)  # refuses a snapshot of another schema
    model = load_retro_model(paths.current_adapter)
    retriever = Retriever.load(paths.index, mode=params.retrieval.mode)
    comparison = compare_systems(model, retriever, test, k, p.max_new_tokens, p.batch_size)
    write_report(comparison, k, paths.evaluation_table, paths.predictions)
    return comparison_metrics(comparison, qa, latest, k)


def main() -> None:
    stage_main("evaluate", run)


if __name__ == "__main__":
    main()
