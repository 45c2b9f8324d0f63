"""Every vector store backend side by side at 10k and 100k real MiniLM vectors.

    .venv/bin/python benchmarks/retrieval.py [--sizes 10000 100000] [--queries 300] [--out FILE]

Passages come from the synthetic generator (one fact each) and are embedded once with
all-MiniLM-L6-v2 (cached under benchmarks/.cache). Each backend and size runs in its own
subprocess, so memory figures do not mix. Per run it reports:

- build: upserting every vector; update: deleting 1% of the entries and upserting 1% new ones;
- search p50/p99 for one query at a time, and per-query time in batches of 32;
- embed+search p50: encoding one question with MiniLM and searching, the latency a user sees;
- recall@10 against exact search over the same vectors;
- RSS growth while building, and the snapshot's size on disk.

Remote backends join when QDRANT_URL / WEAVIATE_URL are set (infra/docker-compose.yml).
pgvector rows run against `RETRO_PG_URL`, or else a PostgreSQL with pgvector that the `pgserver`
package starts for the run (its disk size is the table's with its indexes). `--backends` keeps
only the rows whose label starts with one of the given words, e.g. `--backends faiss pgvector`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

CACHE = Path(__file__).parent / ".cache"
EMBEDDER = "all-MiniLM-L6-v2"


def backends(size: int) -> dict[str, tuple[str, dict]]:
    """Backend configurations; IVF lists grow with the corpus (about 2.5 * sqrt(n))."""
    lists = 256 if size >= 50_000 else 64
    found = {
        "faiss Flat": ("faiss", {"factory": "Flat"}),
        "faiss HNSW32": ("faiss", {"factory": "HNSW32", "index_params": "efSearch=128"}),
        "faiss HNSW32 efC200": (
            "faiss",
            {"factory": "HNSW32", "index_params": "efConstruction=200,efSearch=128"},
        ),
        f"faiss IVF{lists},PQ48,RFlat": (
            "faiss",
            {"factory": f"IVF{lists},PQ48,RFlat", "index_params": f"nprobe={lists // 4},k_factor_rf=16"},
        ),
        "qdrant local": ("qdrant", {}),
    }
    if os.environ.get("QDRANT_URL"):
        found["qdrant server"] = ("qdrant", {"url": os.environ["QDRANT_URL"]})
    if os.environ.get("WEAVIATE_URL"):
        found["weaviate server"] = ("weaviate", {"url": os.environ["WEAVIATE_URL"]})
    if os.environ.get("RETRO_PG_URL"):
        found["pgvector HNSW m16"] = ("pgvector", {"index": "hnsw", "ef_search": 128})
        found[f"pgvector IVFFlat{lists}"] = (
            "pgvector",
            {"index": "ivfflat", "lists": lists, "probes": lists // 4},
        )
    return found


def corpus(size: int, queries: int) -> tuple[list[dict], np.ndarray, list[str]]:
    """Passages, their vectors (cached) and question texts about a sample of them."""
    from components.data.synthetic import passages
    from components.embed.encoder import encode

    rows = passages(max(size, 100_000) if (CACHE / _name(100_000)).exists() else size, seed=0)
    path = CACHE / _name(len(rows))
    if path.exists():
        vectors = np.load(path)
    else:
        print(f"embedding {len(rows)} passages once (cached in {path})", file=sys.stderr)
        vectors = encode([r["text"] for r in rows], EMBEDDER, batch_size=128, progress=True)
        CACHE.mkdir(exist_ok=True)
        np.save(path, vectors)
    rows, vectors = rows[:size], vectors[:size]
    asked = np.random.default_rng(1).choice(size, queries, replace=False)
    texts = [
        f"What is the {rows[i]['id'].split('#')[1].replace('_', ' ')} of {rows[i]['doc_id'].split('/')[1]}?"
        for i in asked
    ]
    return rows, vectors, texts


def _name(size: int) -> str:
    return f"passages-{size}-seed0-{EMBEDDER}.npy"


def run_one(label: str, size: int, queries: int) -> dict:
    """Build, update and query one backend at one size; returns its row."""
    import psutil

    from components.embed.encoder import encode
    from components.stores import STORES

    kind, params = backends(size)[label]
    rows, vectors, texts = corpus(size, queries)
    ids = [r["id"] for r in rows]
    payloads = [{"doc_id": r["doc_id"], "domain": r["domain"]} for r in rows]
    query_vectors = encode(texts, EMBEDDER)
    truth = np.argsort(-(vectors @ query_vectors.T), axis=0)[:10].T
    folder = Path(tempfile.mkdtemp())
    process = psutil.Process()
    rss_before = process.memory_info().rss
    store = STORES.build(
        kind, dim=vectors.shape[1], path=str(folder / "store"), name=f"bench_{uuid.uuid4().hex[:8]}", **params
    )
    try:
        started = time.perf_counter()
        for start in range(0, size, 10_000):
            part = slice(start, start + 10_000)
            store.upsert(ids[part], vectors[part], payloads[part])
        build_s = time.perf_counter() - started
        rss_growth = (process.memory_info().rss - rss_before) / 2**20

        singles = []
        found = []
        for q in query_vectors:
            started = time.perf_counter()
            found.append(store.search(q[None, :], 10)[0])
            singles.append(time.perf_counter() - started)
        recall = float(
            np.mean(
                [
                    len({h.id for h in hits} & {ids[i] for i in want}) / 10
                    for hits, want in zip(found, truth, strict=True)
                ]
            )
        )
        started = time.perf_counter()
        for start in range(0, queries, 32):
            store.search(query_vectors[start : start + 32], 10)
        batched_ms = (time.perf_counter() - started) * 1000 / queries
        embed_only = []
        for text in texts[100:200]:
            started = time.perf_counter()
            encode([text], EMBEDDER)
            embed_only.append(time.perf_counter() - started)
        end_to_end = []
        for text in texts[:100]:
            started = time.perf_counter()
            store.search(encode([text], EMBEDDER), 10)
            end_to_end.append(time.perf_counter() - started)

        changed = max(1, size // 100)
        rng = np.random.default_rng(2)
        gone = [ids[i] for i in rng.choice(size, changed, replace=False)]
        fresh = vectors[rng.choice(size, changed, replace=False)] + 0.01
        fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
        started = time.perf_counter()
        store.delete(gone)
        store.upsert(
            [f"new-{i}" for i in range(changed)], fresh, [{"doc_id": "new", "domain": "new"}] * changed
        )
        update_s = time.perf_counter() - started
        store.save(folder / "store")
        on_server = store.info().get("bytes")  # a server table: its size with its indexes
        files = sum(p.stat().st_size for p in (folder / "store").rglob("*") if p.is_file())
        disk_mb = (on_server or files) / 2**20
    finally:
        store.drop()
        store.close()
    ms = np.array(singles) * 1000
    return {
        "backend": label,
        "size": size,
        "build_s": round(build_s, 2),
        "update_1pct_s": round(update_s, 3),
        "search_p50_ms": round(float(np.percentile(ms, 50)), 3),
        "search_p99_ms": round(float(np.percentile(ms, 99)), 3),
        "batched_ms_per_query": round(batched_ms, 3),
        "embed_p50_ms": round(float(np.percentile(np.array(embed_only) * 1000, 50)), 2),
        "embed_search_p50_ms": round(float(np.percentile(np.array(end_to_end) * 1000, 50)), 2),
        "recall_at_10": round(recall, 3),
        "rss_growth_mb": round(rss_growth, 1),
        "disk_mb": round(disk_mb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("--backends", nargs="+", default=None, help="labels starting with these words")
    parser.add_argument("--one", nargs=2, metavar=("BACKEND", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.queries)))
        return

    if not os.environ.get("RETRO_PG_URL"):
        import pgserver

        server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="retro-pg-")), cleanup_mode="stop")
        os.environ["RETRO_PG_URL"] = server.get_uri()  # the row subprocesses connect to it
    corpus(max(args.sizes), args.queries)  # embed (or load) once before the timed runs
    results = []
    columns = list(run_keys())
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for size in args.sizes:
        for label in backends(size):
            if args.backends and not any(label.startswith(word) for word in args.backends):
                continue
            command = [sys.executable, __file__, "--one", label, str(size), "--queries", str(args.queries)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"| {label} | {size} | failed: {done.stderr.strip().splitlines()[-1]} |")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(row)
            print("| " + " | ".join(str(row[c]) for c in columns) + " |", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


def run_keys() -> tuple[str, ...]:
    return (
        "backend",
        "size",
        "build_s",
        "update_1pct_s",
        "search_p50_ms",
        "search_p99_ms",
        "batched_ms_per_query",
        "embed_p50_ms",
        "embed_search_p50_ms",
        "recall_at_10",
        "rss_growth_mb",
        "disk_mb",
    )


if __name__ == "__main__":
    main()
