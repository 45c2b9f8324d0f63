"""evaluate: base model without retrieval, base model with retrieval (RAG), adapter with retrieval;
with per-domain adapters, each on its own domain's test questions and passages too
(components/evaluation/systems.py)."""

from __future__ import annotations

from typing import Any

from components.core.artifacts import read_table
from components.core.params import PipelineParams
from components.core.paths import Paths
from components.data.chunking import read_chunks
from components.evaluation.compare import read_predictions
from components.evaluation.plots import write_evaluation_plots
from components.evaluation.systems import domain_summary, evaluate_domains, evaluate_one
from components.stages.entry import stage_main
from components.stores.manifest import IndexManifest


def run(params: PipelineParams, paths: Paths) -> dict[str, Any]:
    """Run the evaluate stage: compare the adapter with the baselines on held-out questions."""
    from components.stores.retriever import Retriever

    qa, chunks = read_table(paths.questions, "synthesize"), read_chunks(paths.chunks)
    IndexManifest.read(paths.index)  # refuses a snapshot of another schema
    retriever = Retriever.load(paths.index, mode=params.retrieval.mode)
    metrics = evaluate_one(params, paths, qa, chunks, retriever)
    domains = evaluate_domains(params, paths, qa, chunks, retriever)
    if domains:
        metrics["domains"] = {d: domain_summary(m) for d, m in domains.items()}
    plots = write_evaluation_plots(metrics, read_predictions(paths.predictions), paths.evaluation_plots)
    return metrics | {"plots": [p.name for p in plots]}


def main() -> None:
    """Command-line entry of the evaluate stage (`python -m components.stages.evaluate`)."""
    stage_main("evaluate", run)


if __name__ == "__main__":
    main()
