"""Embedding engines side by side (`embed.backend` torch | onnx, `embed.quantize` int8), one run.

    .venv/bin/python -m benchmarks.embedding_engines [--passages 10000] [--queries 200]

covid-qa (../shared/corpora/covid-qa, chunked as the chunk stage does, its 841 human questions
whose answer was located in a chunk): for each engine, the passages/s of embedding every chunk,
and the chunk recall@10 of its query vectors against the PyTorch index (the torch vectors of the
chunks), with the overlap of its top 10 with torch's top 10.

Latency at --passages generated passages (benchmarks/retrieval.py's corpus, real MiniLM vectors),
a hybrid FAISS HNSW32 + BM25 retriever as `retro serve` opens it: one query's embedding and one
whole `retrieve(question, k=3)` (embedding, both searches, fusion), p50 and p95 in milliseconds.
The engines take turns query by query, so load on the machine falls on all of them alike.

Prints markdown tables and writes benchmarks/results/embedding_engines.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
COVID = ROOT.parent / "shared" / "corpora" / "covid-qa"
RESULTS = ROOT / "benchmarks" / "results" / "embedding_engines.json"
ENGINES = ("torch", "onnx", "onnx-int8")
EMBEDDER = "all-MiniLM-L6-v2"


def covid_chunks() -> tuple[list[str], list[str], list[str], list[set[str]]]:
    """(chunk ids, chunk texts, questions, gold chunk ids) of covid-qa, with the default settings."""
    from components.core.params import ChunkParams, IngestParams
    from components.data.chunking import chunk_documents, load_offsets
    from components.data.ingest import ingest_corpus
    from components.data.readers import ReadOptions
    from components.embed.encoder import resolve_embedder
    from components.evaluation.gold import located_golds

    ingest, chunk = IngestParams(), ChunkParams()
    corpus = ingest_corpus(COVID, ingest.min_chars, ingest.max_chars, ReadOptions(ocr="off"))
    offsets = load_offsets(resolve_embedder(EMBEDDER))
    chunks = chunk_documents(
        corpus.documents, offsets, chunk.max_tokens, chunk.overlap, chunk.split_at_headings
    ).drop_duplicates("chunk_id")
    questions, golds = located_golds(corpus.qa, chunks)
    return chunks["chunk_id"].tolist(), chunks["text"].tolist(), questions, golds


def top_ids(queries: np.ndarray, passages: np.ndarray, ids: list[str], k: int) -> list[list[str]]:
    scores = queries @ passages.T
    best = np.argsort(-scores, axis=1)[:, :k]
    return [[ids[j] for j in row] for row in best]


def covid_quality() -> dict[str, Any]:
    """Per engine: chunks/s, and recall@10 of its queries against the torch index of covid-qa."""
    from components.embed.encoder import encode

    ids, texts, questions, golds = covid_chunks()
    rows, index = {}, {}
    for engine in ENGINES:
        encode(texts[:8], EMBEDDER, backend=engine)  # load (and export) outside the clock
        began = time.perf_counter()
        index[engine] = encode(texts, EMBEDDER, batch_size=64, backend=engine)
        rows[engine] = {"chunks_per_s": round(len(texts) / (time.perf_counter() - began), 1)}
    reference = top_ids(encode(questions, EMBEDDER), index["torch"], ids, 10)
    for engine in ENGINES:
        queries = encode(questions, EMBEDDER, backend=engine)
        found = top_ids(queries, index["torch"], ids, 10)
        own = top_ids(queries, index[engine], ids, 10)
        rows[engine] |= {
            "recall@10_torch_index": _recall(found, golds),
            "recall@10_own_index": _recall(own, golds),
            "top10_overlap_with_torch": round(
                float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, reference, strict=True)])), 4
            ),
            "min_cosine_to_torch": round(float((index[engine] * index["torch"]).sum(1).min()), 6),
        }
    return {"chunks": len(ids), "questions": len(questions), "engines": rows}


def _recall(rankings: list[list[str]], golds: list[set[str]]) -> float:
    return round(float(np.mean([bool(set(r) & g) for r, g in zip(rankings, golds, strict=True)])), 4)


def latency(passages: int, queries: int) -> dict[str, Any]:
    """p50/p95 ms of one query's embedding and of one whole retrieve() per engine, taking turns."""
    from retrieval import corpus

    from components.embed.encoder import encode
    from components.stores.retriever import Retriever

    rows, vectors, questions = corpus(passages, queries)
    store = {"factory": "HNSW32", "index_params": "efConstruction=200,efSearch=128"}
    retriever = Retriever.build(
        [r["id"] for r in rows], [r["text"] for r in rows], vectors, [{"doc_id": r["doc_id"]} for r in rows],
        EMBEDDER, store="faiss", store_params=store,
    )  # fmt: skip
    timings: dict[str, dict[str, list[float]]] = {e: {"embed": [], "retrieve": []} for e in ENGINES}
    for engine in ENGINES:  # warm up: load, export, first calls
        retriever.embed_backend = engine
        retriever.retrieve(questions[:3], 3)
    for question in questions:
        for engine in ENGINES:
            retriever.embed_backend = engine
            began = time.perf_counter()
            encode([question], EMBEDDER, backend=engine)
            middle = time.perf_counter()
            retriever.retrieve([question], 3)
            timings[engine]["embed"].append((middle - began) * 1000)
            timings[engine]["retrieve"].append((time.perf_counter() - middle) * 1000)
    retriever.close()
    return {
        "passages": passages,
        "queries": len(questions),
        "engines": {
            e: {
                f"{kind}_ms_{q}": round(float(np.percentile(t, q)), 2)
                for kind, t in kinds.items()
                for q in (50, 95)
            }
            for e, kinds in timings.items()
        },
    }


def markdown(report: dict[str, Any]) -> str:
    quality, speed = report["covid_qa"], report["latency"]
    lines = [
        f"covid-qa: {quality['chunks']} chunks, {quality['questions']} questions with a located gold chunk",
        "",
        "| engine | chunks/s | recall@10, torch index | recall@10, own index | top-10 overlap with torch "
        "| min cosine to torch | query embed p50 / p95 ms | retrieve p50 / p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for engine in ENGINES:
        q, s = quality["engines"][engine], speed["engines"][engine]
        lines.append(
            f"| {engine} | {q['chunks_per_s']:.0f} | {q['recall@10_torch_index']:.3f} "
            f"| {q['recall@10_own_index']:.3f} | {q['top10_overlap_with_torch']:.3f} "
            f"| {q['min_cosine_to_torch']:.4f} | {s['embed_ms_50']:.2f} / {s['embed_ms_95']:.2f} "
            f"| {s['retrieve_ms_50']:.2f} / {s['retrieve_ms_95']:.2f} |"
        )
    lines.append(
        f"\nLatency: {speed['passages']} passages, {speed['queries']} questions, hybrid HNSW32 + BM25, k=3."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passages", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args(argv)
    report = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "date": time.strftime("%Y-%m-%d"),
        "covid_qa": covid_quality(),
        "latency": latency(args.passages, args.queries),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
