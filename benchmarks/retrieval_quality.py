"""Chunk-level retrieval quality of every way the index can rank, on four corpora.

    .venv/bin/python -m benchmarks.retrieval_quality [--corpus NAME ...] [--work DIR] [-S key=value ...]

Corpora: the synthetic sample (`retro make-corpus`, seed 7), ../shared/corpora/covid-qa,
../shared/corpora/pubmedqa and an identifier-heavy corpus of service bulletins
(benchmarks/identifier_corpus.py, seed 0). Each runs ingest, chunk, embed and index in a project
folder of its own under --work with the repository's params.yaml (plus -S overrides), as
`dvc repro` would, so the tuned row uses exactly the fusion the index stage fitted and recorded
in its manifest (on the validation share of the train questions).

Scored on the test questions whose answer lies in particular chunks (chunk-level gold,
components/evaluation/gold.py): recall@1/3/10 and MRR@10, from the same 40 candidates of each
half. Where no answer lies in a chunk (pubmedqa's yes / no / maybe labels) every chunk of the
gold document counts: document level, over every test question. Rows:
- dense (MiniLM), BM25 with bm25s' default terms (before) and with identifier terms (now);
- hybrid, equal-weight RRF over dense and default-term BM25: the default before;
- hybrid, equal-weight RRF over dense and identifier BM25;
- hybrid, tuned: the fusion recorded in the index manifest;
- the same corpus again with `retrieval.finetune=on` (a project of its own): fine-tuned dense,
  fine-tuned hybrid with equal RRF and with the fusion fitted for it;
- with `-S retrieval.rerank=on`, each row's top 20 reordered by the cross-encoder the index stage
  trained ("+ reranker"), and whether `rerank: auto` would have kept it (its validation MRR).
Query latency p50 (one question at a time, k=3, the embedder warm) of dense, BM25 and hybrid,
and of the retrieval path before (dense + default-term BM25 + equal RRF, emulated here).

Prints one markdown table per corpus and writes benchmarks/results/retrieval_quality.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.real_corpora import SHARED, prepare_project, run_stages
from components.core.config import load_params_file

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "retrieval_quality.json"
STAGES = ["ingest", "chunk", "embed", "index"]
DEPTH = 40  # candidates of each half: candidate_depth(10)
LATENCY_QUERIES = 50


def make_corpora(work: Path) -> dict[str, Path]:
    """Every corpus folder, generated where needed."""
    from benchmarks.identifier_corpus import write

    sample, bulletins = work / "corpora" / "sample", work / "corpora" / "bulletins"
    if not (sample / "qa.jsonl").exists():
        retro = Path(sys.executable).parent / "retro"
        subprocess.run([str(retro), "make-corpus", str(sample), "--seed", "7", "--versions", "1"], check=True)
    if not (bulletins / "qa.jsonl").exists():
        write(bulletins)
    return {
        "synthetic sample": sample,
        "covid-qa": SHARED / "covid-qa",
        "pubmedqa": SHARED / "pubmedqa",
        "bulletins (identifiers)": bulletins,
    }


def default_term_bm25(texts: list[str], ids: list[str]):  # noqa: ANN201
    """BM25 over bm25s' default terms (two or more word characters): the tokenization before."""
    import bm25s

    index = bm25s.BM25()
    index.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)

    def search(queries: list[str], payload_of: dict[str, dict]) -> list[list]:
        from components.stores.base import Hit

        words = bm25s.tokenize(queries, stopwords="en", show_progress=False)
        docs, scores = index.retrieve(words, k=min(DEPTH, len(ids)), show_progress=False, n_threads=1)
        return [
            [Hit(ids[j], float(s), payload_of[ids[j]]) for j, s in zip(row, srow, strict=True) if s > 0]
            for row, srow in zip(docs.tolist(), scores.tolist(), strict=True)
        ]

    return search


BEFORE = "hybrid, equal RRF, default terms (default before)"


def hits_at_3(rankings: list[list], golds: list[set[str]]) -> list[float]:
    """Per question: 1.0 when a gold chunk is in the top 3."""
    return [float(any(h.id in g for h in r[:3])) for r, g in zip(rankings, golds, strict=True)]


def recall3_gains(hits: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Each row's recall@3 minus the default before's, paired over the same questions, with its
    95% bootstrap interval."""
    from components.evaluation.intervals import paired_difference

    before = hits[BEFORE]
    return {name: paired_difference(h, before).as_dict("d") for name, h in hits.items() if name != BEFORE}


def scores_of(rankings: list[list], golds: list[set[str]]) -> dict[str, float]:
    """Chunk-level recall@1/3/10 and MRR@10 of ranked hits against each question's gold chunks."""
    first = [
        next((i for i, h in enumerate(hits[:10]) if h.id in gold), None)
        for hits, gold in zip(rankings, golds, strict=True)
    ]
    n = len(first)
    row = {f"recall@{k}": sum(i is not None and i < k for i in first) / n for k in (1, 3, 10)}
    row["mrr"] = sum(1.0 / (i + 1) for i in first if i is not None) / n
    return {k: round(v, 4) for k, v in row.items()}


def latency_p50(call, queries: list[str]) -> float:  # noqa: ANN001
    """Median milliseconds of `call([query])`, one query at a time."""
    times = []
    for query in queries:
        began = time.perf_counter()
        call([query])
        times.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(times), 2)


def measure(project: Path, raw: dict[str, Any], finetuned: bool) -> dict[str, Any]:
    """Every row's scores on one built project (the fine-tuned embedder's rows when `finetuned`),
    and the query latencies."""
    from components.core.params import parse_params
    from components.embed.encoder import encode
    from components.stores.manifest import IndexManifest
    from components.stores.rerank import RERANK_DEPTH
    from components.stores.retriever import EQUAL_WEIGHTS, Retriever, reciprocal_rank_fusion

    params = parse_params(raw)
    paths = params.layout(project)
    part, test, questions, golds, level = scored_questions(params, paths)
    manifest = IndexManifest.read(paths.index)
    retriever = Retriever.load(paths.index)
    dense, sparse = retriever.rankings(questions, DEPTH)
    tuned = manifest.fusion["weights"]

    def fused(a: list[list], b: list[list], weights: dict) -> list[list]:
        return [retriever.fuse(x, y, RERANK_DEPTH, weights) for x, y in zip(a, b, strict=True)]

    tuned_name = f"hybrid, tuned ({tuned['method']}, dense {tuned['dense']})"
    if finetuned:
        rows = {
            "fine-tuned dense": dense,
            "fine-tuned hybrid, equal RRF": fused(dense, sparse, EQUAL_WEIGHTS),
            f"fine-tuned {tuned_name}": fused(dense, sparse, tuned),
        }
    else:
        payloads = [{"doc_id": d, "text": t} for d, t in zip(part["doc_id"], part["text"], strict=True)]
        payload_of = dict(zip(part["chunk_id"], payloads, strict=True))
        old_bm25 = default_term_bm25(part["text"].tolist(), part["chunk_id"].tolist())
        old_sparse = old_bm25(questions, payload_of)
        rows = {
            "dense": dense,
            "BM25, default terms (before)": old_sparse,
            "BM25, identifier terms": sparse,
            "hybrid, equal RRF, default terms (default before)": fused(dense, old_sparse, EQUAL_WEIGHTS),
            "hybrid, equal RRF, identifier terms": fused(dense, sparse, EQUAL_WEIGHTS),
            tuned_name: fused(dense, sparse, tuned),
        }
    reranker, retriever.reranker = retriever.reranker, None
    if reranker is not None:  # each row's top RERANK_DEPTH reordered by the index's reranker
        for name in [n for n in rows if "default terms" not in n]:
            rows[f"{name} + reranker"] = [
                reranker.rerank(q, r[:RERANK_DEPTH], 10) for q, r in zip(questions, rows[name], strict=True)
            ]
    sample = questions[:LATENCY_QUERIES]
    retriever.retrieve(sample[:1], 3)
    latency = {}
    if not finetuned:  # the retrieval path before, emulated: dense + default-term BM25, equal RRF

        def before(query: list[str]) -> list:
            hits = retriever.store.search(encode(query, retriever.embedder), 20, None)[0]
            return reciprocal_rank_fusion([hits, old_bm25(query, payload_of)[0]], 3, retriever.rrf_k)

        latency["hybrid before"] = latency_p50(before, sample)
    for mode in ("dense", "bm25", "hybrid"):
        retriever.mode = mode
        latency[mode] = latency_p50(lambda q: retriever.retrieve(q, 3), sample)  # noqa: B023
    if reranker is not None:
        retriever.reranker = reranker
        latency["hybrid + reranker"] = latency_p50(lambda q: retriever.retrieve(q, 3), sample)
    embed = json.loads(paths.metrics_of("embed").read_text())
    return {
        "chunks": len(part),
        "test_questions": int(len(test)),
        "located_questions": len(questions),
        "level": level,
        "fusion": manifest.fusion,
        "rerank": manifest.rerank,
        **({"finetune": embed.get("finetune")} if finetuned else {}),
        "rows": {name: scores_of(ranked, golds) for name, ranked in rows.items()},
        "hits@3": {name: hits_at_3(ranked, golds) for name, ranked in rows.items()},
        "latency_p50_ms": latency,
    }


def scored_questions(params, paths):  # noqa: ANN001, ANN201
    """(chunks, test rows, questions, their gold chunk ids, level) of the newest corpus version."""
    from components.core.artifacts import read_table, versions_in
    from components.data.chunking import read_chunks
    from components.evaluation.gold import located_golds

    chunks, qa = read_chunks(paths.chunks), read_table(paths.qa, "ingest")
    latest = versions_in(chunks)[-1]
    part = chunks[chunks["version"] == latest]
    test = qa[(qa["version"] == latest) & (qa["split"] == "test")]
    questions, golds = located_golds(test, part, params.retrieval.gold_min_overlap)
    if questions:
        return part, test, questions, golds, "chunk"
    # label answers (yes / no / maybe): any chunk of the gold document counts
    by_doc = part.groupby("doc_id")["chunk_id"].apply(set).to_dict()
    return part, test, test["question"].tolist(), [by_doc.get(d, set()) for d in test["doc_id"]], "document"


def markdown(name: str, report: dict[str, Any]) -> str:
    lines = [
        f"**{name}**: {report['chunks']} chunks, {report['located_questions']} of {report['test_questions']} "
        f"test questions scored at {report['level']} level",
        "",
        "| ranking | recall@1 | recall@3 | recall@10 | MRR@10 | recall@3 minus before, paired |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    gains = report.get("recall@3_minus_before", {})
    for row, s in report["rows"].items():
        figures = " | ".join(f"{s[key]:.3f}" for key in ("recall@1", "recall@3", "recall@10", "mrr"))
        d = gains.get(row)
        gain = f"{d['d']:+.3f} [{d['d_lo']:+.3f}, {d['d_hi']:+.3f}]" if d else "0" if row == BEFORE else "n/a"
        lines.append(f"| {row} | {figures} | {gain} |")
    ms = ", ".join(f"{k} {v} ms" for k, v in report["latency_p50_ms"].items())
    tuned = report.get("finetune") or {}
    lines.append(f"\nquery p50 (k=3, one query at a time): {ms}")
    if tuned.get("state") == "trained":
        lines.append(
            f"fine-tuning: {tuned['pairs']} pairs, {tuned['steps']} steps, {tuned['seconds']} s "
            f"(final train loss {tuned['train_loss']})"
        )
    for key in ("rerank", "fine-tuned rerank"):
        r = report.get(key) or {}
        if r.get("state") == "trained":
            verdict = "keep" if r["reranked_mrr"] > r["first_stage_mrr"] else "drop"
            lines.append(
                f"{key}er: {r['rows']} rows, {r['steps']} steps, {r['seconds']} s; validation MRR@10 "
                f"{r['first_stage_mrr']} first stage, {r['reranked_mrr']} reranked: auto would {verdict} it"
            )
    curve = report.get("pairs_curve")
    if curve:
        lines += [
            f"\nfine-tuned on a sample of the {curve['available_pairs']} pairs (dense, test questions):",
            "",
            "| pairs | recall@1 | recall@3 | recall@10 | MRR@10 | seconds |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for size, s in curve.items():
            if size != "available_pairs":
                figures = " | ".join(f"{s[key]:.3f}" for key in ("recall@1", "recall@3", "recall@10", "mrr"))
                lines.append(f"| {size} | {figures} | {s.get('seconds', 0)} |")
    return "\n".join(lines)


def pairs_curve(project: Path, raw: dict[str, Any], sizes: list[int]) -> dict[str, dict[str, float]]:
    """Dense recall@1/3/10 and MRR on the test questions of an embedder fine-tuned on a seeded
    sample of `sizes` (question, gold chunk) pairs each, with the pipeline's recipe ("0": none)."""
    import random

    import numpy as np

    from components.core.artifacts import read_table
    from components.core.params import parse_params
    from components.data.splits import fit_split
    from components.embed.encoder import encode
    from components.embed.finetune import bm25_negatives, finetune_embedder, training_pairs
    from components.evaluation.gold import located_golds
    from components.stores.base import Hit

    params = parse_params(raw)
    paths, r = params.layout(project), params.retrieval
    part, _, questions, golds, _ = scored_questions(params, paths)
    qa = read_table(paths.qa, "ingest")
    version = part["version"].iloc[0]
    fit = fit_split(qa, version, r.validation_share)
    text_of = dict(zip(part["chunk_id"], part["text"], strict=True))
    fit_questions, fit_golds = located_golds(fit, part, r.gold_min_overlap)
    anchors, positives = training_pairs(fit_questions, fit_golds, text_of)
    paired = [g for g in fit_golds if any(c in text_of for c in g)]
    ids, texts = part["chunk_id"].tolist(), part["text"].tolist()
    negatives = bm25_negatives(anchors, paired, ids, texts, positives)
    curve = {}
    for size in [0, *sizes]:
        name = params.model.embedder
        if size:
            chosen = sorted(random.Random(size).sample(range(len(anchors)), min(size, len(anchors))))
            out = project.parent / f"{project.name}-curve-{size}"
            rows = [[column[i] for i in chosen] for column in (anchors, positives, negatives)]
            recipe = {"epochs": r.finetune_epochs, "batch_size": r.finetune_batch_size}
            recipe |= {"learning_rate": r.finetune_learning_rate, "seed": params.model.seed}
            report = finetune_embedder(name, *rows, out, **recipe)
            name = str(out)
        top = np.argsort(-(encode(questions, name) @ encode(texts, name).T), axis=1)[:, :10]
        ranked = [[Hit(ids[j], 0.0, {}) for j in row] for row in top]
        curve[str(size)] = scores_of(ranked, golds) | ({"seconds": report["seconds"]} if size else {})
        print(f"  {size} pairs: {curve[str(size)]}", flush=True)
    return {"available_pairs": len(anchors), **curve}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", action="append", help="only these corpora (names as in the tables)")
    parser.add_argument(
        "--work", type=Path, default=ROOT / "benchmarks" / "results" / "retrieval_quality" / "work"
    )
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--pairs-curve", type=int, nargs="+", metavar="N",
        help="then fine-tune on N sampled pairs for each N and report dense recall (the finetune threshold)",
    )  # fmt: skip
    parser.add_argument(
        "--measure-only", action="store_true", help="measure the projects an earlier run built (quiet cores)"
    )
    parser.add_argument(
        "--variant", choices=["both", "base", "finetuned"], default="both",
        help="build and measure only this variant; the other one's rows stay as an earlier run left them",
    )  # fmt: skip
    args = parser.parse_args(argv)
    reports = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name, folder in make_corpora(args.work).items():
        if args.corpus and name not in args.corpus:
            continue
        print(f"{name}:", flush=True)
        slug = name.split(" ")[0]
        report: dict[str, Any] = {"overrides": args.overrides, "seconds": {}}
        earlier = reports.get(name, {})  # what this run does not redo is kept
        kept = ("seconds", "pairs_curve") if args.measure_only else ("pairs_curve",)
        report |= {key: earlier[key] for key in kept if key in earlier}
        if args.variant != "both":  # the other variant's rows, as the earlier run measured them
            other = (
                "rows",
                "hits@3",
                "latency_p50_ms",
                "finetune",
                "fusion",
                "fine-tuned fusion",
                "fine-tuned rerank",
            )
            report |= {key: earlier[key] for key in other if key in earlier}
            report["seconds"] = earlier.get("seconds", {})
        for finetuned in {"both": (False, True), "base": (False,), "finetuned": (True,)}[args.variant]:
            if finetuned and report.get("level") == "document":
                break  # label answers (pubmedqa): no answer lies in a chunk, so no training pair
            variant = f"{slug}-finetuned" if finetuned else slug
            overrides = [*args.overrides, f"retrieval.finetune={'on' if finetuned else 'off'}"]
            if args.measure_only:  # the projects of an earlier run, measured again
                project = args.work / variant
                raw = load_params_file(project / "params.yaml")
            else:
                project, raw = prepare_project(variant, folder, args.work, overrides)
                report["seconds"][variant] = run_stages(project, raw, STAGES)
            measured = measure(project, raw, finetuned)
            rows = {**report.get("rows", {}), **measured.pop("rows")}
            hits = {**report.get("hits@3", {}), **measured.pop("hits@3")}
            latency = {**report.get("latency_p50_ms", {}), **{
                (f"fine-tuned {k}" if finetuned else k): v for k, v in measured.pop("latency_p50_ms").items()
            }}  # fmt: skip
            fusion, rerank = measured.pop("fusion"), measured.pop("rerank")
            report |= {**measured, "rows": rows, "hits@3": hits, "latency_p50_ms": latency}
            report["fine-tuned fusion" if finetuned else "fusion"] = fusion
            report["fine-tuned rerank" if finetuned else "rerank"] = rerank
        if args.pairs_curve and report.get("level") == "chunk":
            off = [*args.overrides, "retrieval.finetune=off"]
            curve_project, raw = prepare_project(f"{slug}-curve", folder, args.work, off)
            run_stages(curve_project, raw, ["ingest", "chunk"])
            report["pairs_curve"] = pairs_curve(curve_project, raw, args.pairs_curve)
        report["recall@3_minus_before"] = recall3_gains(report.pop("hits@3"))
        reports[name] = report
        print(markdown(name, reports[name]), flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(reports, indent=2, default=str))
    return reports


if __name__ == "__main__":
    main()
