"""Dense vs BM25 vs hybrid (RRF) retrieval on a generated corpus, side by side in one run.

    .venv/bin/python benchmarks/retrieval_modes.py [--entities-per-domain 40] [--k 3] [--seed 0]

Prints recall@1, recall@k, MRR@10 of the gold document and mean query latency per mode.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from components.data.synthetic import make_corpus
from components.embed.encoder import encode
from components.evaluation.metrics import mean, recall_at_k, reciprocal_rank
from components.stores.retriever import Retriever


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--entities-per-domain", type=int, default=40)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp()) / "kb"
    make_corpus(folder, seed=args.seed, entities_per_domain=args.entities_per_domain)
    docs = sorted((folder / "docs").rglob("*.md"))
    ids = [p.relative_to(folder / "docs").with_suffix("").as_posix() for p in docs]
    texts = [p.read_text() for p in docs]
    questions = [json.loads(line) for line in (folder / "qa.jsonl").read_text().splitlines()]
    encode(texts[:2])  # load the model outside the timed part
    started = time.perf_counter()
    vectors = encode(texts, batch_size=64)
    embed_s = time.perf_counter() - started
    payloads = [{"doc_id": i} for i in ids]
    hybrid = Retriever.build(ids, texts, vectors, payloads, "all-MiniLM-L6-v2", mode="hybrid")

    print(f"{len(docs)} documents, {len(questions)} questions, embedding {len(docs) / embed_s:.0f} docs/s")
    print(f"| mode | recall@1 | recall@{args.k} | MRR@10 | ms/query |")
    print("|---|---:|---:|---:|---:|")
    for mode in ("dense", "bm25", "hybrid"):
        hybrid.mode = mode
        hybrid.retrieve([questions[0]["question"]], 10)  # warm up
        started = time.perf_counter()
        hits = hybrid.retrieve([q["question"] for q in questions], 10)
        ms = (time.perf_counter() - started) * 1000 / len(questions)
        ranked = [[h.payload["doc_id"] for h in row] for row in hits]
        golds = [q["doc_id"] for q in questions]
        r1 = mean([recall_at_k(r, g, 1) for r, g in zip(ranked, golds, strict=True)])
        rk = mean([recall_at_k(r, g, args.k) for r, g in zip(ranked, golds, strict=True)])
        mrr = mean([reciprocal_rank(r, g) for r, g in zip(ranked, golds, strict=True)])
        print(f"| {mode} | {r1:.3f} | {rk:.3f} | {mrr:.3f} | {ms:.2f} |")


if __name__ == "__main__":
    main()
