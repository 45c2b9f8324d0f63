"""Building a FAISS IVF index from shards on a local Dask cluster against one process, in one run.

    .venv/bin/python benchmarks/sharded_index.py --vectors 200000

The vectors are generated (clustered, unit length, 384 dimensions like MiniLM) so that the run
measures index building alone. Every configuration builds the same `FaissStore` from the same
vectors: training happens once in the calling process in all of them (as in the index stage);
the sharded runs add each shard on a worker and merge the parts. The table gives wall time (for
the sharded runs including the start of the local cluster and moving the vectors to the
workers), the speed-up over one process using every core, and whether searches return exactly
the single-process ids.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

DIM = 384


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, DIM)).astype(
        np.float32
    )
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--factory", default="IVF1024,PQ48")
    parser.add_argument("--index-params", default="nprobe=32")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local Dask worker processes")
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()

    from components.core.params import ShardingParams
    from components.stores.faiss_store import FaissStore
    from flows.sharded_index import upsert_sharded

    vectors = _vectors(args.vectors)
    ids = [f"c{i}" for i in range(len(vectors))]
    payloads = [{} for _ in ids]
    queries = _vectors(300, seed=1)
    threads = faiss.omp_get_max_threads()

    def build(sharding: ShardingParams | None) -> tuple[float, list[list[str]]]:
        store = FaissStore(DIM, args.factory, args.index_params)
        started = time.perf_counter()
        if sharding is None:
            store.upsert(ids, vectors, payloads)
        else:
            upsert_sharded(store, ids, vectors, payloads, sharding)
        seconds = time.perf_counter() - started
        return seconds, [[h.id for h in row] for row in store.search(queries, 10)]

    upsert_sharded(
        FaissStore(DIM, "Flat"), ids[:8], vectors[:8], payloads[:8], ShardingParams(shards=2, workers=1)
    )
    rows = []
    trainer = FaissStore(DIM, args.factory, args.index_params)
    started = time.perf_counter()
    trainer._train(vectors)
    training = time.perf_counter() - started
    single, reference = build(None)
    rows.append((f"one process, {threads} FAISS threads", single, True))
    faiss.omp_set_num_threads(1)
    seconds, found = build(None)
    rows.append(("one process, 1 FAISS thread", seconds, found == reference))
    faiss.omp_set_num_threads(threads)
    for workers in args.workers:
        p = ShardingParams(shards=args.shards, workers=workers, threads_per_worker=1)
        seconds, found = build(p)
        rows.append(
            (f"Dask local, {workers} worker(s) x 1 thread, {args.shards} shards", seconds, found == reference)
        )

    print(f"\n{len(vectors)} vectors x {DIM}, {args.factory} ({args.index_params}), {os.cpu_count()} cores\n")
    print(f"Training alone (the same in every configuration): {training:.1f} s\n")
    print("| configuration | seconds (train + add) | speed-up vs one process | same search results |")
    print("|---|---:|---:|---|")
    for label, seconds, same in rows:
        print(f"| {label} | {seconds:.1f} | {single / seconds:.2f}x | {'yes' if same else 'no'} |")


if __name__ == "__main__":
    main()
