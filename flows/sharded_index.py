"""Building a large FAISS index as parallel Prefect tasks over shards, on a Dask or Ray cluster.

FAISS's recipe for distributed builds: train the index once, add each shard's vectors to its
own copy of the empty trained index on a worker, then merge the parts in order. With the same
training vectors the merged index equals the one a single process builds (same lists, same
codes, same order), so searches return the same ids and scores. This works for types whose
parts merge: Flat and the IVF family (IVF4096,Flat, IVF4096,PQ48, IVF65536,SQ8...); HNSW graphs
and refine wrappers cannot be merged. Server stores (Qdrant, Weaviate) parallelise ingestion on
the server and are not sharded here.
"""

from __future__ import annotations

import faiss
import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from components.core.params import ShardingParams
from components.stores.base import StoreInputError, VectorStore
from components.stores.faiss_store import FaissStore
from flows.task_runners import bounds, task_runner


@task(name="index-shard", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def add_shard(template: np.ndarray, vectors: np.ndarray, int_ids: np.ndarray, threads: int) -> np.ndarray:
    """Add one shard's vectors to a copy of the empty trained index; returns it serialized."""
    faiss.omp_set_num_threads(threads)
    index = faiss.deserialize_index(template)
    index.add_with_ids(vectors, int_ids)
    return faiss.serialize_index(index)


def check_shardable(store: VectorStore) -> None:
    """Raise a clear error naming `index.sharding` when this store cannot be built from shards."""
    if not isinstance(store, FaissStore):
        raise ValueError(
            f"index.sharding: only FAISS indexes are built from shards; {type(store).__name__} "
            "servers parallelise ingestion themselves (set index.sharding.shards: 0)"
        )
    if not store.mergeable:
        raise ValueError(
            f"index.sharding: FAISS {store.factory!r} indexes cannot be merged from shards; use a Flat "
            "or IVF type (e.g. IVF4096,PQ48 with index_params nprobe=64) or index.sharding.shards: 0"
        )


def upsert_sharded(
    store: VectorStore, ids: list[str], vectors: np.ndarray, payloads: list[dict], p: ShardingParams
) -> None:
    """Fill an empty store with these entries; with `p.shards` > 1, as shard tasks on the cluster.

    The vectors reach the tasks directly, never as flow parameters (the Prefect API caps those
    at 512 KB); the flow run records only the counts.
    """
    if not p.active or len(ids) < 2:
        store.upsert(ids, vectors, payloads)
        return
    check_shardable(store)
    assert isinstance(store, FaissStore)
    template, int_ids = store.begin_parts(ids, vectors, payloads)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    parts = bounds(len(ids), p.shards)

    @flow(name="sharded-index", task_runner=task_runner(p))
    def sharded_index(entries: int, shards: int, factory: str) -> list[np.ndarray]:
        futures = [
            add_shard.submit(template, vectors[a:b], int_ids[a:b], p.threads_per_worker) for a, b in parts
        ]
        return [future.result() for future in futures]

    blobs = sharded_index(len(ids), len(parts), store.factory)
    try:
        store.finish_parts([faiss.deserialize_index(blob) for blob in blobs])
    except RuntimeError as err:
        raise StoreInputError(f"merging the index shards failed: {err}") from err
