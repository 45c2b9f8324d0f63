"""Real corpora through the pipeline's stages: five systems side by side with 95% intervals.

    .venv/bin/python benchmarks/real_corpora.py [--corpus NAME=FOLDER ...] [-S key=value ...]
        [--work DIR] [--write-benchmarks]

Default corpora: covid-qa and pubmedqa from ../shared/corpora (copied; the originals are only
read). For each one, in a project folder of its own under --work, the stages ingest, chunk,
embed, index, adapter-train, continual-update and evaluate run with the repository's
params.yaml (and the -S overrides), exactly as `dvc repro` would run them. That gives three rows:
the base model without retrieval, the base model with retrieval (RAG) and the adapter with
retrieval. Two more rows train on the same training examples, with the same seed and as many
optimiser steps as adapter-train took:
- closed-book LoRA: the same LoRA recipe, trained and asked without passages ("standard PEFT");
- full fine-tuning with passages: every weight of the base model trained on the prompts with
  the retrieved passages (learning rate 5e-5, as in benchmarks/adapters.py).
All five answer the same held-out questions with the same answer-length cap. Each figure has a
95% bootstrap interval over questions; "vs RAG" is the paired difference with its interval.
For corpora whose answers are labels (pubmedqa: yes / no / maybe) the score is accuracy: the
first label word of the answer against the gold label.

Prints one markdown table per corpus and writes benchmarks/results/real_corpora.json; with
--write-benchmarks, the tables also replace the marked block in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import stat
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "corpora"
DEFAULT_CORPORA = [f"covid-qa={SHARED / 'covid-qa'}", f"pubmedqa={SHARED / 'pubmedqa'}"]
STAGES = ["ingest", "chunk", "embed", "index", "synthesize", "adapter_train", "continual_update", "evaluate"]
FULL_FINETUNE_LR = 5e-5
REFERENCES = {
    "pubmedqa": "Published reference points (Jin et al. 2019, reasoning-required): majority class 0.552, "
    "BioBERT 0.681, single human annotator 0.780."
}
BLOCK_START, BLOCK_END = "<!-- real-corpora:start -->", "<!-- real-corpora:end -->"


def prepare_project(name: str, corpus: Path, work: Path, overrides: list[str]) -> tuple[Path, dict[str, Any]]:
    """A fresh project folder with a writable copy of the corpus and params.yaml plus overrides."""
    from components.core.config import apply_overrides, load_params_file
    from components.core.params import parse_params

    project = work / name
    shutil.rmtree(project, ignore_errors=True)
    kb = project / "data" / "raw" / "kb"
    shutil.copytree(corpus, kb)
    for path in [kb, *kb.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    apply_overrides(project / "params.yaml", [f"ingest.source={kb}", *overrides], check=parse_params)
    return project, load_params_file(project / "params.yaml")


def run_stages(project: Path, raw: dict[str, Any], stages: list[str] = STAGES) -> dict[str, float]:
    """The pipeline's stages in order (module names), in this process; seconds per stage."""
    from components.stages.entry import execute

    seconds = {}
    for module_name in stages:
        stage = module_name.replace("_", "-")
        module = importlib.import_module(f"components.stages.{module_name}")
        began = time.perf_counter()
        execute(stage, module.run, raw, project)
        seconds[stage] = round(time.perf_counter() - began, 1)
        print(f"  {stage}: {seconds[stage]:.0f} s", flush=True)
    return seconds


def label_answers(answers: list[str]) -> bool:
    """Are all gold answers labels (yes / no / maybe ...) rather than text?"""
    from components.evaluation.gold import LABEL_ANSWERS
    from components.evaluation.metrics import normalize_answer

    return bool(answers) and all(normalize_answer(a) in LABEL_ANSWERS for a in answers)


def label_accuracy(prediction: str, gold: str) -> float:
    """1.0 when the first label word of `prediction` is the gold label."""
    from components.evaluation.gold import LABEL_ANSWERS
    from components.evaluation.metrics import normalize_answer

    first = next((w for w in normalize_answer(prediction).split() if w in LABEL_ANSWERS), "")
    return float(first == normalize_answer(gold))


def _result(
    name: str,
    predictions: list[str],
    test: list[dict],
    passages: list[list[str]] | None,
    ms: float,
    seed: int,
):  # noqa: ANN202
    from components.evaluation.harness import scored

    return scored(name, predictions, [t["answer"] for t in test], [ms] * len(predictions), passages, seed)


def trained_rows(project: Path, raw: dict[str, Any], test: list[dict], passages: list[list[str]]) -> list:
    """Closed-book LoRA and full fine-tuning with passages: same examples, seed and steps as the adapter."""
    import torch

    from components.adapters.base_model import load_base_model
    from components.adapters.builder import build_retro_model
    from components.adapters.generation import generate
    from components.adapters.retro_model import RetroModel
    from components.core.artifacts import read_table, versions_in
    from components.core.params import parse_params
    from components.data.chunking import read_chunks
    from components.training.budget import split_validation
    from components.training.examples import Example, examples_of_version, train_items
    from components.training.trainer import train

    params = parse_params(raw)
    paths = params.layout(project)
    p, seed = params.adapter_train, params.model.seed
    budget = json.loads(paths.metrics_of("adapter-train").read_text())
    evaluation = json.loads(paths.metrics_of("evaluate").read_text())
    chunks, qa = read_chunks(paths.chunks), read_table(paths.qa, "ingest")
    first = versions_in(chunks)[0]
    examples = examples_of_version(params, paths, chunks, first, train_items(qa, first), None, p.ensure_gold)
    train_set, _ = split_validation(examples, p.validation_share, seed)
    steps, questions = int(budget["steps"]), [t["question"] for t in test]
    rows = []
    for name in ("closed-book LoRA", "full fine-tuning + passages"):
        torch.manual_seed(seed)
        base, tokenizer = load_base_model(params.model.base, params.model.dtype)
        closed = name.startswith("closed")
        if closed:
            model = build_retro_model(base, tokenizer, p.method, p.config, None, steps, None)
            data = [Example(e.qid, e.question, e.answer, e.doc_id, []) for e in train_set]
            lr = p.lr
        else:
            model = RetroModel(base, tokenizer)
            for weight in base.parameters():
                weight.requires_grad_(True)
            data, lr = train_set, FULL_FINETUNE_LR
        stats = train(
            model, data, steps, p.batch_size, lr, p.max_length, seed, autocast_bf16=p.bf16, desc=name
        )
        given = None if closed else passages
        prompts = [model.prompt(q, None if closed else ps) for q, ps in zip(questions, passages, strict=True)]
        began = time.perf_counter()
        predictions = generate(model, prompts, evaluation["max_new_tokens"], params.evaluate.batch_size)
        ms = (time.perf_counter() - began) * 1000 / len(questions)
        rows.append((_result(name, predictions, test, given, ms, seed), stats["seconds"]))
        del model, base
    return rows


def corpus_report(name: str, project: Path, raw: dict[str, Any], seconds: dict[str, float]) -> dict[str, Any]:
    """The five rows of one corpus, with intervals and the paired difference against RAG."""
    from components.core.params import parse_params
    from components.evaluation.intervals import bootstrap, paired_difference
    from components.stores.retriever import Retriever

    params = parse_params(raw)
    paths = params.layout(project)
    evaluation = json.loads(paths.metrics_of("evaluate").read_text())
    predictions = [json.loads(line) for line in paths.predictions.read_text().splitlines()]
    test = [{"question": r["question"], "answer": r["gold"]} for r in predictions]
    k, seed = params.retrieval.k, params.model.seed
    hits = Retriever.load(paths.index, mode=params.retrieval.mode).retrieve([t["question"] for t in test], k)
    passages = [[h.payload["text"] for h in row] for row in hits]
    pipeline_rows = [
        ("base", "base (no retrieval)", None),
        ("rag", "base + retrieval (RAG)", passages),
        ("adapter", "adapter + retrieval", passages),
    ]
    rows = [
        (
            _result(
                label, [r[key] for r in predictions], test, given, evaluation[key]["latency_ms_mean"], seed
            ),
            None,
        )
        for key, label, given in pipeline_rows
    ]
    train_seconds = json.loads(paths.metrics_of("adapter-train").read_text())["seconds"]
    rows[2] = (rows[2][0], train_seconds)
    extra = trained_rows(project, raw, test, passages)
    rows = [rows[0], rows[1], extra[0], rows[2], extra[1]]
    golds = [t["answer"] for t in test]
    labels = label_answers(golds)

    def score(result: Any) -> list[float]:  # accuracy on label answers, else token F1
        if not labels:
            return result.f1_scores
        return [label_accuracy(p, g) for p, g in zip(result.predictions, golds, strict=True)]

    rag = score(rows[1][0])
    report_rows = []
    for result, trained_s in rows:
        retrieves = result.support_scores is not None
        report_rows.append(
            {
                "system": result.name,
                "score": "accuracy" if labels else "f1",
                **result.intervals["em"].as_dict("em"),
                **result.intervals["f1"].as_dict("f1"),
                **bootstrap(score(result), seed).as_dict("main"),
                "vs_rag": paired_difference(score(result), rag, seed).as_dict("gain"),
                **(result.intervals["support"].as_dict("support") if retrieves else {"support": None}),
                "chunk_recall@k": evaluation[f"chunk_recall@{k}"] if retrieves else None,
                "doc_recall@k": evaluation[f"doc_recall@{k}"] if retrieves else None,
                "latency_ms": result.latency_ms_mean,
                "train_seconds": trained_s,
            }
        )
    return {
        "corpus": name,
        "questions": len(test),
        "k": k,
        "gold": evaluation["gold"],
        "chunk_questions": evaluation["chunk_questions"],
        "max_new_tokens": evaluation["max_new_tokens"],
        "training": {
            key: json.loads(paths.metrics_of("adapter-train").read_text()).get(key)
            for key in (
                "steps",
                "planned_steps",
                "steps_source",
                "train_examples",
                "validation_examples",
                "stopped_early",
            )
        },
        "stage_seconds": seconds,
        "rows": report_rows,
    }


def _ci(row: dict, key: str) -> str:
    if row.get(key) is None:
        return "n/a"
    return f"{row[key]:.3f} [{row[key + '_lo']:.3f}, {row[key + '_hi']:.3f}]"


def markdown(report: dict[str, Any]) -> str:
    """One corpus's table, with what it was measured on."""
    k, gold, train = report["k"], report["gold"], report["training"]
    score = "accuracy" if report["rows"][0]["score"] == "accuracy" else "F1"
    lines = [
        f"**{report['corpus']}**: {report['questions']} held-out questions; gold located in chunks for "
        f"{report['chunk_questions']} (span {gold['span']}, overlap {gold['overlap']}; whole document for "
        f"{gold['document']}); answers capped at {report['max_new_tokens']} tokens; adapter-train ran "
        f"{train['steps']} of {train['planned_steps']} planned steps ({train['steps_source']}, "
        f"{train['validation_examples']} validation questions, stopped early: {train['stopped_early']}).",
        "",
        f"| system | EM | {score} | {score} vs RAG (paired) | answer support | chunk recall@{k} "
        f"| doc recall@{k} | ms/question | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        recall = [
            f"{row[key]:.3f}" if row[key] is not None else "n/a" for key in ("chunk_recall@k", "doc_recall@k")
        ]
        trained = f"{row['train_seconds']:.0f}" if row["train_seconds"] else "-"
        lines.append(
            f"| {row['system']} | {_ci(row, 'em')} | {_ci(row, 'main')} | {_ci(row['vs_rag'], 'gain')} "
            f"| {_ci(row, 'support')} | {recall[0]} | {recall[1]} | {row['latency_ms']:.0f} | {trained} |"
        )
    if report["corpus"] in REFERENCES:
        lines += ["", REFERENCES[report["corpus"]]]
    return "\n".join(lines) + "\n"


def write_benchmarks_block(text: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace the marked real-corpora block of BENCHMARKS.md (appended when missing)."""
    current = path.read_text()
    block = f"{BLOCK_START}\n{text}{BLOCK_END}"
    if BLOCK_START in current and BLOCK_END in current:
        before, rest = current.split(BLOCK_START, 1)
        current = before + block + rest.split(BLOCK_END, 1)[1]
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    path.write_text(current)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--corpus", action="append", help="NAME=FOLDER (repeatable); default: covid-qa, pubmedqa"
    )
    parser.add_argument("-S", "--set", action="append", default=[], help="params override, section.key=value")
    parser.add_argument(
        "--work", type=Path, default=ROOT / "benchmarks" / "results" / "real_corpora" / "work"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "real_corpora.json")
    parser.add_argument("--write-benchmarks", action="store_true", help="put the tables into BENCHMARKS.md")
    args = parser.parse_args(argv)
    from components.core.environment import apply_offline_env

    apply_offline_env()
    reports, tables = [], []
    for spec in args.corpus or DEFAULT_CORPORA:
        name, _, folder = spec.partition("=")
        if not Path(folder).is_dir():
            parser.error(f"--corpus {spec}: no such folder")
        print(f"{name}:", flush=True)
        project, raw = prepare_project(name, Path(folder), args.work, args.set)
        report = corpus_report(name, project, raw, run_stages(project, raw))
        reports.append(report)
        tables.append(markdown(report))
        print(tables[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(reports, indent=2))
    if args.write_benchmarks:
        write_benchmarks_block("\n".join(tables))
    return reports


if __name__ == "__main__":
    main()
