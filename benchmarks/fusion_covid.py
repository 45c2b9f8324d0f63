"""Fusion modes on covid-qa: in_context against kv (and gated), the same data, seed and steps.

    .venv/bin/python -m benchmarks.fusion_covid [--work DIR] [--modes in_context,kv,gated] [-S key=value ...]

`covid-human` (benchmarks/synthesized_questions.py: ../shared/corpora/covid-qa with its 560 human
train questions, COVID_SETTINGS and `evaluate.max_questions=100`) is run with the default
`in_context` fusion, or reused when it already has its evaluation. Each other mode is a copy of
that project run again with `adapter-train.fusion.fusion=<mode>`: DVC reruns only what the fusion
changes (index for the chunk key/value store, adapter-train, continual-update, evaluate,
register), so every mode trains on the same examples, with the same retrieved passages, and is
scored on the same seeded human test questions. Without in_context in --modes and without that
project, each mode runs in a fresh project of its own (the same settings and seeds; compare the
RAG rows to check that two such runs saw the same passages).

Prints a markdown table (F1 with 95% bootstrap intervals, paired difference to in_context,
training seconds per step) and writes benchmarks/results/fusion_covid.json.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from benchmarks.synthesized_questions import (
    COVID_SETTINGS,
    covid_corpus,
    f1_rows,
    metrics,
    pipeline,
    predictions,
    run_once,
)
from benchmarks.tables import covid_main, interval

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "fusion_covid.json"
SETTINGS = [*COVID_SETTINGS, "evaluate.max_questions=100"]


def run_mode(work: Path, mode: str, overrides: list[str]) -> tuple[Path, float | None]:
    """The project of one fusion mode and its pipeline seconds (None when reused)."""
    base = work / "covid-human"
    if mode == "in_context":
        return base, run_once(base, base.name, covid_corpus(True), [*SETTINGS, *overrides])
    project = work / f"covid-human-{mode}"
    if (project / "data" / "metrics" / "evaluate.json").exists():
        return project, None
    if not (base / "data" / "metrics" / "evaluate.json").exists():  # no in_context run to copy
        settings = [*SETTINGS, *overrides, f"adapter-train.fusion.fusion={mode}"]
        return project, run_once(project, base.name, covid_corpus(True), settings)
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(base, project, symlinks=True)
    source = f"data/raw/{base.name}"
    return project, pipeline(project, source, [*SETTINGS, *overrides, f"adapter-train.fusion.fusion={mode}"])


def compare(work: Path, modes: list[str], overrides: list[str]) -> dict[str, Any]:
    from components.evaluation.intervals import bootstrap, paired_difference

    projects, seconds = {}, {}
    ordered = sorted(set(modes), key=lambda m: m != "in_context")  # in_context first when asked for
    for mode in ordered:
        print(f"{mode}: running", flush=True)
        projects[mode], seconds[mode] = run_mode(work, mode, overrides)
    runs = {mode: predictions(p) for mode, p in projects.items()}
    systems = {"rag": runs[ordered[0]], **{f"adapter {m}": rows for m, rows in runs.items()}}
    scores = f1_rows(systems, {name: name.split()[0] for name in systems})
    trained = {m: metrics(p, "train") for m, p in projects.items()}
    return {
        "settings": [*SETTINGS, *overrides],
        "questions": len(scores["rag"]),
        "f1": {name: bootstrap(s).as_dict("f1") for name, s in scores.items()},
        "minus_in_context": {
            m: paired_difference(scores[f"adapter {m}"], scores["adapter in_context"]).as_dict("d")
            for m in projects
            if m != "in_context" and "in_context" in projects
        },
        "minus_rag": {
            m: paired_difference(scores[f"adapter {m}"], scores["rag"]).as_dict("d") for m in projects
        },
        "seconds_per_step": {m: t.get("seconds_per_step") for m, t in trained.items()},
        "train_seconds": {m: t.get("seconds") for m, t in trained.items()},
        "pipeline_seconds": seconds,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| system | F1 [95% CI] | minus RAG, paired | minus in_context, paired | s/step |",
        "|---|---:|---:|---:|---:|",
    ]
    rag = report["f1"]["rag"]
    lines.append(
        f"| RAG (base + retrieval) | {rag['f1']:.3f} [{rag['f1_lo']:.3f}, {rag['f1_hi']:.3f}] | 0 | | |"
    )
    for mode, step in report["seconds_per_step"].items():
        f1 = report["f1"][f"adapter {mode}"]
        versus = report["minus_in_context"].get(mode)
        lines.append(
            f"| adapter, {mode} | {interval(f1, 'f1')} | "
            f"{interval(report['minus_rag'][mode], 'd', signed=True)} | "
            f"{interval(versus, 'd', signed=True) if versus else '0' if mode == 'in_context' else 'n/a'} | "
            f"{step:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def modes(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--modes", default="in_context,kv", help="comma-separated fusion modes")

    def report_of(args: argparse.Namespace) -> dict[str, Any]:
        return compare(args.work, args.modes.split(","), args.overrides)

    return covid_main(argv, __doc__, report_of, markdown, RESULTS, modes)


if __name__ == "__main__":
    main()
