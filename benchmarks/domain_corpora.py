"""Per-domain adapters on real text: COVID-QA and PubMedQA as two domains of one corpus.

    .venv/bin/python benchmarks/domain_corpora.py [--pubmed-docs 300] [--questions 40]
        [--work DIR] [-S key=value ...]

Builds one corpus with `docs/covid/` (the 49 COVID-QA articles and their questions) and
`docs/pubmed/` (a seeded sample of PubMedQA abstracts and their questions), runs ingest to
evaluate with `adapter-train.per_domain: true` (the repository's params.yaml plus -S), then answers
a seeded sample of each domain's held-out questions with four systems:
- RAG: the base model, passages from the whole index;
- shared adapter: the main adapter (trained on both domains), passages from the whole index;
- shared adapter, domain passages: the main adapter with the domain's filter on retrieval;
- domain adapter: the domain's own adapter with its domain's passages (what the service answers
  for `model: <name>-adapter-<domain>`).
Every system of a domain answers the same questions with the same answer-length cap (the domain
evaluation's). Scores: token F1 (covid), label accuracy (pubmed: the first yes/no/maybe word),
with 95% bootstrap intervals and the paired difference against the shared adapter. Writes
benchmarks/results/domain_corpora.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.real_corpora import (  # noqa: E402
    SHARED,
    STAGES,
    label_accuracy,
    prepare_project,
    run_stages,
)

DOMAIN_SOURCES = {"covid": SHARED / "covid-qa", "pubmed": SHARED / "pubmedqa"}


def build_corpus(out: Path, pubmed_docs: int, seed: int) -> Path:
    """docs/<domain>/*.md and one qa.jsonl whose doc ids carry the domain folder."""
    shutil.rmtree(out, ignore_errors=True)
    questions = []
    for domain, source in DOMAIN_SOURCES.items():
        docs = sorted((source / "docs").glob("*.md"))
        if domain == "pubmed":
            docs = sorted(random.Random(seed).sample(docs, min(pubmed_docs, len(docs))))
        kept = {d.stem for d in docs}
        (out / "docs" / domain).mkdir(parents=True)
        for doc in docs:
            shutil.copyfile(doc, out / "docs" / domain / doc.name)
        for line in (source / "qa.jsonl").read_text().splitlines():
            item = json.loads(line)
            if item["doc_id"] in kept:
                questions.append({**item, "doc_id": f"{domain}/{item['doc_id']}"})
    (out / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    return out


def domain_rows(project: Path, raw: dict[str, Any], domain: str, n_questions: int) -> dict[str, Any]:
    """The four systems on a seeded sample of `domain`'s held-out questions."""
    from components.core.params import parse_params
    from components.data.domains import domain_filter
    from components.evaluation.harness import scored
    from components.evaluation.intervals import bootstrap, paired_difference
    from components.serving.answerer import Answerer

    params = parse_params(raw)
    paths = params.layout(project)
    own = paths.for_domain(domain)
    evaluation = json.loads(own.metrics_of("evaluate").read_text())
    budget, seed = int(evaluation["max_new_tokens"]), params.model.seed
    rows = [json.loads(line) for line in own.predictions.read_text().splitlines()]
    rows = random.Random(seed).sample(rows, min(n_questions, len(rows)))
    questions, golds = [r["question"] for r in rows], [r["gold"] for r in rows]
    shared = Answerer(paths.current_adapter, paths.index)
    specialist = Answerer(own.current_adapter, paths.index)
    labels = domain == "pubmed"

    def answer(answerer: Answerer, scope: dict | None, base: bool = False) -> tuple[list[str], float]:
        answerer.scope = scope
        began = time.perf_counter()
        predictions = []
        for start in range(0, len(questions), 8):
            batch = questions[start : start + 8]
            if base:
                with answerer.model.base_only():
                    predictions += answerer.answer_batch(batch, max_new_tokens=budget)
            else:
                predictions += answerer.answer_batch(batch, max_new_tokens=budget)
        return predictions, (time.perf_counter() - began) * 1000 / len(questions)

    systems = {
        "RAG (base model, whole index)": answer(shared, None, base=True),
        "shared adapter, whole index": answer(shared, None),
        "shared adapter, domain passages": answer(shared, domain_filter(domain)),
        "domain adapter, domain passages": answer(specialist, domain_filter(domain)),
    }

    def score(predictions: list[str]) -> list[float]:
        if labels:
            return [label_accuracy(p, g) for p, g in zip(predictions, golds, strict=True)]
        return scored("", predictions, golds, [0.0] * len(golds), seed=seed).f1_scores

    reference = score(systems["shared adapter, whole index"][0])
    table = []
    for name, (predictions, ms) in systems.items():
        scores = score(predictions)
        table.append(
            {
                "system": name,
                **bootstrap(scores, seed).as_dict("score"),
                "vs_shared": paired_difference(scores, reference, seed).as_dict("gain"),
                "ms_per_question": round(ms, 1),
            }
        )
    return {
        "domain": domain,
        "score": "accuracy" if labels else "f1",
        "questions": len(questions),
        "max_new_tokens": budget,
        "rows": table,
    }


def ci(figures: dict[str, float], name: str, form: str) -> str:
    """`mean [low, high]` of one figure."""
    low, high = figures[f"{name}_lo"], figures[f"{name}_hi"]
    return f"{figures[name]:{form}} [{low:{form}}, {high:{form}}]"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"{report['domain']} ({report['questions']} held-out questions, {report['score']}, "
        f"{report['max_new_tokens']} new tokens at most)",
        "",
        f"| system | {report['score']} [95% CI] | vs shared adapter [95% CI] | ms / question |",
        "|---|---|---|---|",
    ]
    for row in report["rows"]:
        score, gain = ci(row, "score", ".3f"), ci(row["vs_shared"], "gain", "+.3f")
        lines.append(f"| {row['system']} | {score} | {gain} | {row['ms_per_question']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pubmed-docs", type=int, default=300)
    parser.add_argument("--questions", type=int, default=40, help="held-out questions per domain")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / ".cache" / "domain-corpora")
    parser.add_argument("-S", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--resume-from", choices=STAGES, help="keep the project in --work and run from this stage on"
    )
    args = parser.parse_args()
    if args.resume_from:
        from components.core.config import load_params_file

        project = args.work / "project"
        raw = load_params_file(project / "params.yaml")
        seconds = run_stages(project, raw, STAGES[STAGES.index(args.resume_from) :])
    else:
        corpus = build_corpus(args.work / "corpus", args.pubmed_docs, seed=0)
        overrides = ["adapter-train.per_domain=true", "evaluate.max_questions=60", *args.overrides]
        project, raw = prepare_project("project", corpus, args.work, overrides)
        seconds = run_stages(project, raw)
    reports = [domain_rows(project, raw, d, args.questions) for d in DOMAIN_SOURCES]
    trained = json.loads((project / "data" / "metrics" / "train.json").read_text())
    result = {
        "stage_seconds": seconds,
        "domains": reports,
        "training": trained,
        "resumed_from": args.resume_from,
    }
    out = ROOT / "benchmarks" / "results" / "domain_corpora.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    for report in reports:
        print(markdown(report) + "\n")


if __name__ == "__main__":
    main()
