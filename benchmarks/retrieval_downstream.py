"""Does better retrieval make a better adapter? covid-qa through `retro pipeline` twice.

    .venv/bin/python -m benchmarks.retrieval_downstream [--work DIR] [-S key=value ...]

Two projects, made as a user makes one (benchmarks/synthesized_questions.py's make_project), on
../shared/corpora/covid-qa with its 560 human train questions, under the same COVID_SETTINGS
(optimiser steps and answer cap) and `evaluate.max_questions=100` unless -S says otherwise:
- `covid-human-equal`, retrieval as it was: MiniLM off the shelf and equal-weight RRF
  (`retrieval.finetune=off`, `retrieval.fusion=equal`, `retrieval.rerank=off`);
- `covid-human`, every retrieval default: the fine-tuned embedder, fitted fusion, `rerank: auto`.
  This is the human-question project of benchmarks/synthesized_questions.py (same --work and
  settings), so one run serves both tables; a project that already has its evaluation is reused.
Both score the same seeded human test questions. The table gives each run's chunk-level
recall@3, RAG F1 and adapter F1 (95% bootstrap intervals) and the paired differences, after
minus before, for RAG and for the adapter.

Prints the table and writes benchmarks/results/retrieval_downstream.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.synthesized_questions import (
    COVID_SETTINGS,
    covid_corpus,
    f1_rows,
    metrics,
    predictions,
    run_once,
)
from benchmarks.tables import covid_main, interval

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "retrieval_downstream.json"
BEFORE = ["retrieval.finetune=off", "retrieval.fusion=equal", "retrieval.rerank=off"]
RUNS = {"before": ("covid-human-equal", BEFORE), "after": ("covid-human", [])}


def downstream(work: Path, overrides: list[str]) -> dict[str, Any]:
    """Both runs (reusing finished ones), their figures and the paired after-minus-before gains."""
    from components.evaluation.intervals import bootstrap, paired_difference

    settings = [*COVID_SETTINGS, "evaluate.max_questions=100", *overrides]
    seconds, runs, retrieval = {}, {}, {}
    for name, (folder, extra) in RUNS.items():
        project = work / folder
        print(f"{name}: {project}", flush=True)
        seconds[name] = run_once(project, folder, covid_corpus(True), [*settings, *extra])
        runs[name] = predictions(project)
        evaluated = metrics(project, "evaluate")
        used = evaluated["retrieval"].get("reranked", evaluated["retrieval"]["first_stage"])
        retrieval[name] = used | {"retrieve_ms_per_question": evaluated["retrieve_ms_per_question"]}
    systems = {f"{s} {run}": runs[run] for run in RUNS for s in ("rag", "adapter")}
    scores = f1_rows(systems, {name: name.split()[0] for name in systems})
    return {
        "settings": settings,
        "before_overrides": BEFORE,
        "questions": len(scores["rag before"]),
        "retrieval": retrieval,
        "f1": {name: bootstrap(s).as_dict("f1") for name, s in scores.items()},
        "after_minus_before": {
            system: paired_difference(scores[f"{system} after"], scores[f"{system} before"]).as_dict("d")
            for system in ("rag", "adapter")
        },
        "adapter_minus_rag": {
            run: paired_difference(scores[f"adapter {run}"], scores[f"rag {run}"]).as_dict("d")
            for run in RUNS
        },
        "seconds": seconds,
    }


def markdown(report: dict[str, Any]) -> str:
    """One row per retrieval, then the paired gains."""
    lines = [
        "| retrieval | recall@3 (chunk) | RAG F1 | adapter F1 | adapter minus RAG (paired) |",
        "|---|---:|---:|---:|---:|",
    ]
    for run, label in (("before", "MiniLM, equal RRF"), ("after", "fine-tuned, fitted fusion")):
        f1 = {s: report["f1"][f"{s} {run}"] for s in ("rag", "adapter")}
        cells = [interval(f1[s], "f1") for s in ("rag", "adapter")]
        recall = report["retrieval"][run].get("chunk_recall@3")
        recall_cell = f"{recall:.3f}" if recall is not None else "-"
        lines.append(
            f"| {label} | {recall_cell} | {cells[0]} | {cells[1]} | "
            f"{interval(report['adapter_minus_rag'][run], 'd', signed=True)} |"
        )
    gains = report["after_minus_before"]
    lines.append(
        f"\nafter minus before, paired over {report['questions']} questions: "
        f"RAG {interval(gains['rag'], 'd', signed=True)}, "
        f"adapter {interval(gains['adapter'], 'd', signed=True)}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return covid_main(argv, __doc__, lambda args: downstream(args.work, args.overrides), markdown, RESULTS)


if __name__ == "__main__":
    main()
