"""Questions made from the documents (the synthesize stage) against human questions and plain RAG.

    .venv/bin/python -m benchmarks.synthesized_questions covid [--work DIR] [-S key=value ...]
    .venv/bin/python -m benchmarks.synthesized_questions python-docs [--work DIR] [-S key=value ...]

Each run is a project folder under --work (default benchmarks/results/synthesized/work), made as
a user makes one (the repository's code, dvc.yaml and params.yaml, git and DVC) and run with
`retro pipeline`, every default except the -S overrides.

covid: ../shared/corpora/covid-qa twice.
- `covid-synthetic`: the corpus with its train questions removed (qa.jsonl keeps only the 281
  test questions), so adapter-train learns from synthesized questions alone; evaluation scores the
  human test questions (`eval_questions: human`).
- `covid-human`: the whole corpus (560 human train questions).
Both run with COVID_SETTINGS (the same optimiser steps and answer-length cap), so the two
adapters and RAG answer the same 30 seeded test questions under the same settings.
The table pairs every system with RAG and the two adapters with each other (F1, paired 95%
bootstrap intervals over questions); with `--only synthetic` it has the rows of that run alone.

python-docs: the Python 3.11 library reference and tutorial (Debian's python3.11-doc HTML,
334 files; installed with apt-get when missing, never committed), no questions at all: the
pipeline synthesizes them, evaluates on the synthetic test split and registers the version
with `eval_questions: synthetic`.

Prints markdown tables and writes benchmarks/results/synthesized_questions.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COVID = ROOT.parent / "shared" / "corpora" / "covid-qa"
PYTHON_DOCS = Path("/usr/share/doc/python3.11/html")
PYTHON_DOC_FOLDERS = ("library", "tutorial")
BIN = Path(sys.executable).parent
RESULTS = ROOT / "benchmarks" / "results" / "synthesized_questions.json"
PYTHON_DOCS_STAGES = ("ingest", "chunk", "embed", "synthesize", "train", "evaluate", "register")


def make_project(folder: Path, corpus_name: str, fill_corpus) -> Path:  # noqa: ANN001
    """A fresh project (code, dvc.yaml, params.yaml, git, DVC) with its corpus at data/raw/NAME."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, folder / name)
    for package in ("components", "flows"):
        shutil.copytree(ROOT / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    fill_corpus(folder / "data" / "raw" / corpus_name)
    for args in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
        subprocess.run(args, cwd=folder, check=True)
    return folder


def pipeline(project: Path, source: str, overrides: list[str]) -> float:
    """`retro pipeline` with ingest.source and the overrides; its wall seconds."""
    sets = [x for o in [f"ingest.source={source}", *overrides] for x in ("-S", o)]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    began = time.perf_counter()
    proc = subprocess.run([str(BIN / "retro"), "pipeline", *sets], cwd=project, env=env, text=True,
                          capture_output=True)  # fmt: skip
    (project / "pipeline.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"retro pipeline failed in {project}; see {project / 'pipeline.log'}")
    return round(time.perf_counter() - began, 1)


def metrics(project: Path, stage: str) -> dict[str, Any]:
    return json.loads((project / "data" / "metrics" / f"{stage}.json").read_text())


def predictions(project: Path) -> list[dict]:
    return [json.loads(line) for line in (project / "data" / "metrics" / "predictions.jsonl").open()]


def covid_corpus(train_questions: bool):  # noqa: ANN201
    def fill(target: Path) -> None:
        target.mkdir(parents=True)
        shutil.copytree(COVID / "docs", target / "docs")
        rows = [json.loads(line) for line in (COVID / "qa.jsonl").open()]
        kept = [r for r in rows if train_questions or r["split"] == "test"]
        (target / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))

    return fill


def f1_rows(systems: dict[str, list[dict]], key_of: dict[str, str]) -> dict[str, list[float]]:
    """Per-question F1 of each named system, over the questions every run answered, in id order."""
    from components.evaluation.metrics import token_f1

    common = sorted(set.intersection(*({r["id"] for r in rows} for rows in systems.values())))
    scores = {}
    for name, rows in systems.items():
        by_id = {r["id"]: r for r in rows}
        scores[name] = [token_f1(by_id[i][key_of[name]], by_id[i]["gold"]) for i in common]
    return scores


COVID_SETTINGS = ["adapter-train.steps=120", "evaluate.max_new_tokens=79"]
"""Both covid runs: the same optimiser steps (about 2.5 epochs of the synthesized questions, one
of the human ones) and the answer cap of the human train answers (their p95 + 1 tokens), on the
default 30 seeded test questions (add -S evaluate.max_questions=100 for narrower intervals: about
10 more minutes of evaluation a run here)."""


def run_once(project: Path, corpus_name: str, fill, overrides: list[str]) -> float | None:  # noqa: ANN001
    """The pipeline in a new project, unless that project already has its evaluation (reused)."""
    if (project / "data" / "metrics" / "evaluate.json").exists():
        return None
    make_project(project, corpus_name, fill)
    return pipeline(project, f"data/raw/{corpus_name}", overrides)


def covid(work: Path, overrides: list[str], only: str | None = None) -> dict[str, Any]:
    from components.evaluation.intervals import bootstrap, paired_difference

    settings = [*COVID_SETTINGS, *overrides]
    synthetic, human = work / "covid-synthetic", work / "covid-human"
    seconds = {}
    for name, project, train_questions in (("human", human, True), ("synthetic", synthetic, False)):
        if only in (None, name):
            seconds[name] = run_once(project, project.name, covid_corpus(train_questions), settings)
    ran = [p for p in (synthetic, human) if (p / "data" / "metrics" / "evaluate.json").exists()]
    if synthetic not in ran:
        return {"seconds": seconds}
    evaluated = metrics(synthetic, "evaluate")
    runs = {p.name.removeprefix("covid-"): predictions(p) for p in ran}
    rows = {  # table row: (run, system key in predictions.jsonl)
        "base (no retrieval)": ("synthetic", "base"),
        "base + retrieval (RAG)": ("synthetic", "rag"),
        "RAG, in the human run": ("human", "rag"),
        "adapter, synthesized questions": ("synthetic", "adapter"),
        "adapter, human questions": ("human", "adapter"),
    }
    rows = {name: row for name, row in rows.items() if row[0] in runs}
    scores = f1_rows(
        {name: runs[run] for name, (run, _) in rows.items()}, {n: k for n, (_, k) in rows.items()}
    )
    rag = scores["base + retrieval (RAG)"]
    table = {
        name: {"f1": bootstrap(s).as_dict("f1"), "minus_rag": paired_difference(s, rag).as_dict("d")}
        for name, s in scores.items()
    }
    synthetic_vs_human = None
    if "human" in runs:
        synthetic_vs_human = paired_difference(
            scores["adapter, synthesized questions"], scores["adapter, human questions"]
        ).as_dict("d")
    return {
        "questions": len(rag),
        "eval_questions": evaluated.get("eval_questions"),
        "settings": settings,
        "synthesize": metrics(synthetic, "synthesize"),
        "train_synthetic": metrics(synthetic, "train"),
        "train_human": metrics(human, "train") if "human" in runs else None,
        "table": table,
        "synthetic_minus_human": synthetic_vs_human,
        "seconds": seconds,
    }


def python_docs(work: Path, overrides: list[str], only: str | None = None) -> dict[str, Any]:
    if not PYTHON_DOCS.is_dir():
        subprocess.run(["apt-get", "install", "-y", "-q", "python3.11-doc"], check=True)

    def fill(target: Path) -> None:
        for folder in PYTHON_DOC_FOLDERS:
            shutil.copytree(PYTHON_DOCS / folder, target / "docs" / folder, ignore=_only_html)

    project = work / "python-docs"
    seconds = run_once(project, "python-docs", fill, overrides)
    return {
        "seconds": seconds,
        **{
            stage: metrics(project, stage)
            for stage in ("ingest", "chunk", "embed", "synthesize", "train", "evaluate", "register")
        },  # fmt: skip
    }


def _only_html(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if not n.endswith(".html") and not (Path(folder) / n).is_dir()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("corpus", choices=["covid", "python-docs"])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "synthesized" / "work")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[])
    parser.add_argument("--only", choices=["human", "synthetic"], help="covid: run only this project")
    parser.add_argument("--label", help="key of this run in the results file (default: the corpus name)")
    args = parser.parse_args(argv)
    run = covid if args.corpus == "covid" else python_docs
    report = run(args.work, args.overrides, args.only)
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(saved | {args.label or args.corpus: report}, indent=2, default=str))
    print(
        markdown(report) if "table" in report else json.dumps(report.get("evaluate"), indent=2, default=str)
    )
    return report


def markdown(report: dict[str, Any]) -> str:
    """The covid table: F1 and F1 minus RAG (paired) of each system, with 95% intervals."""
    lines = ["| system | F1 | F1 minus RAG (paired) |", "|---|---:|---:|"]
    for name, row in report["table"].items():
        f1, gain = row["f1"], row["minus_rag"]
        lines.append(
            f"| {name} | {f1['f1']:.3f} [{f1['f1_lo']:.3f}, {f1['f1_hi']:.3f}] "
            f"| {gain['d']:+.3f} [{gain['d_lo']:+.3f}, {gain['d_hi']:+.3f}] |"
        )
    d = report["synthetic_minus_human"]
    if d is None:
        return "\n".join(lines)
    lines.append(
        f"\nsynthesized minus human adapter, paired: {d['d']:+.3f} [{d['d_lo']:+.3f}, {d['d_hi']:+.3f}]"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
