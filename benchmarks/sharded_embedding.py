"""Sharded embedding on a local Dask cluster (Prefect tasks) against one process, in one run.

    .venv/bin/python benchmarks/sharded_embedding.py --passages 6000

Every configuration embeds the same generated passages with the packaged MiniLM; the table gives
wall time (for the sharded runs including the start of the local cluster and the model load in
each worker), passages per second, the speed-up over one process using every core, and the
largest difference from the single-process vectors.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

EMBEDDER = "all-MiniLM-L6-v2"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passages", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local Dask worker processes")
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()

    from components.core.params import ShardingParams
    from components.data.synthetic import passages
    from components.embed.encoder import encode
    from flows.sharded_embed import encode_sharded

    texts = [r["text"] for r in passages(args.passages, seed=0)]
    encode(texts[:64], EMBEDDER, args.batch_size)  # load the model before timing
    rows = []
    threads = torch.get_num_threads()
    started = time.perf_counter()
    reference = encode(texts, EMBEDDER, args.batch_size)
    single = time.perf_counter() - started
    rows.append((f"one process, {threads} torch threads", single, single, 0.0))

    torch.set_num_threads(1)
    started = time.perf_counter()
    one_thread = encode(texts, EMBEDDER, args.batch_size)
    rows.append(
        ("one process, 1 torch thread", time.perf_counter() - started, None, _diff(one_thread, reference))
    )
    torch.set_num_threads(threads)

    encode_sharded(texts[:8], EMBEDDER, args.batch_size, ShardingParams(shards=2, workers=1))  # warm imports
    for workers in args.workers:
        p = ShardingParams(shards=args.shards, workers=workers, threads_per_worker=1)
        started = time.perf_counter()
        vectors = encode_sharded(texts, EMBEDDER, args.batch_size, p)
        total = time.perf_counter() - started
        label = f"Dask local, {workers} worker(s) x 1 thread, {args.shards} shards"
        rows.append((label, total, None, _diff(vectors, reference)))

    print(f"\n{len(texts)} passages, MiniLM, batch {args.batch_size}, {os.cpu_count()} cores\n")
    print("| configuration | seconds | passages/s | speed-up vs one process | max abs diff |")
    print("|---|---:|---:|---:|---:|")
    for label, seconds, _, diff in rows:
        print(
            f"| {label} | {seconds:.1f} | {len(texts) / seconds:.0f} | {single / seconds:.2f}x | {diff:.1e} |"
        )


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


if __name__ == "__main__":
    main()
