"""A FAISS index built from shards on a local Dask cluster equals the single-process build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components.core.params import ShardingParams
from components.stores.base import STORES
from components.stores.faiss_store import FaissStore
from components.stores.retriever import Retriever
from flows.sharded_index import check_shardable, upsert_sharded

DIM = 32


def _entries(n: int) -> tuple[list[str], np.ndarray, list[dict]]:
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((20, DIM))
    vectors = (centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, DIM))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"doc{i % 50}/chunk{i}" for i in range(n)]
    return ids, vectors, [{"domain": "a" if i % 3 else "b", "n": i} for i in range(n)]


def _search(store: FaissStore, queries: np.ndarray, where: dict | None = None) -> list[list[tuple]]:
    return [[(h.id, round(h.score, 5)) for h in row] for row in store.search(queries, 10, where)]


@pytest.mark.parametrize(
    ("factory", "index_params"),
    [("Flat", ""), ("IVF16,PQ8", "nprobe=4")],
)
def test_sharded_build_searches_like_the_single_process_one(
    prefect_api,
    tmp_path: Path,
    factory: str,
    index_params: str,  # noqa: ANN001
) -> None:
    ids, vectors, payloads = _entries(1500)
    single = FaissStore(DIM, factory, index_params)
    single.upsert(ids, vectors, payloads)
    shards = ShardingParams(shards=3, workers=2)
    built = Retriever.build(
        ids, [f"text {i}" for i in ids], vectors, payloads, "all-MiniLM-L6-v2", "dense",
        store="faiss", store_params={"factory": factory, "index_params": index_params},
        fill=lambda store, *entries: upsert_sharded(store, *entries, p=shards),
    )  # fmt: skip
    sharded = built.store
    assert isinstance(sharded, FaissStore)

    queries = vectors[::37] + 0.05
    assert sharded.count() == single.count() == 1500
    assert _search(sharded, queries) == _search(single, queries)
    assert _search(sharded, queries, {"domain": "b"}) == _search(single, queries, {"domain": "b"})
    assert sharded.payload("doc7/chunk7") == {"domain": "a", "n": 7, "text": "text doc7/chunk7"}

    # the merged index behaves as a store afterwards: saved, loaded, updated, deleted from
    sharded.save(tmp_path / "store")
    loaded = FaissStore(DIM, factory, index_params, path=str(tmp_path / "store"))
    assert _search(loaded, queries) == _search(single, queries)
    for store in (loaded, single):
        store.delete(ids[:100])
        store.upsert(["new"], vectors[:1], [{"domain": "c"}])
    assert loaded.count() == 1401
    assert _search(loaded, queries) == _search(single, queries)


def test_unmergeable_stores_are_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"index.sharding: FAISS 'HNSW32'.*Flat or IVF"):
        check_shardable(FaissStore(DIM, "HNSW32"))
    qdrant = STORES.build("qdrant", dim=DIM, path=str(tmp_path / "q"), name="t")
    try:
        with pytest.raises(ValueError, match="index.sharding: only FAISS"):
            check_shardable(qdrant)
    finally:
        qdrant.close()
    ids, vectors, payloads = _entries(300)
    hnsw = FaissStore(DIM, "HNSW32")
    with pytest.raises(ValueError, match="index.sharding"):
        upsert_sharded(hnsw, ids, vectors, payloads, ShardingParams(shards=2))
    assert hnsw.count() == 0 and hnsw.index.ntotal == 0
