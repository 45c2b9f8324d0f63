"""One congruence suite for every vector store backend available here.

The same upserts, deletes, replacements and filtered searches run on each backend over real
MiniLM embeddings of a generated corpus, and the results are compared with exact search in
numpy: exact backends must return identical ids, approximate ones recall@10 >= 0.95. Remote
backends run when QDRANT_URL / WEAVIATE_URL are set (see infra/docker-compose.yml).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from components.data.synthetic import passages
from components.embed.encoder import encode
from components.stores import STORES, StoreInputError, StoreUnavailable

N, K = 1200, 10
QDRANT_URL, WEAVIATE_URL = os.environ.get("QDRANT_URL"), os.environ.get("WEAVIATE_URL")
PG = "the pg_url fixture"  # a PostgreSQL server with pgvector, started for the tests (conftest.py)
BACKENDS = [
    pytest.param("faiss", {"factory": "Flat"}, True, id="faiss-flat"),
    pytest.param("faiss", {"factory": "HNSW32", "index_params": "efSearch=64"}, False, id="faiss-hnsw"),
    pytest.param(
        "faiss",
        {"factory": "IVF16,PQ48,RFlat", "index_params": "nprobe=12,k_factor_rf=4"},
        False,
        id="faiss-ivfpq",
    ),
    # IVF probing every list is exact; its lists hold the ids, which deletes must keep in step
    pytest.param(
        "faiss", {"factory": "IVF16,Flat", "index_params": "nprobe=16"}, True, id="faiss-ivf-all-lists"
    ),
    pytest.param("pgvector", {"url": PG, "index": "none"}, True, id="pgvector-exact"),
    pytest.param("pgvector", {"url": PG, "index": "hnsw", "ef_search": 64}, False, id="pgvector-hnsw"),
    pytest.param(
        "pgvector", {"url": PG, "index": "ivfflat", "lists": 8, "probes": 8}, True, id="pgvector-ivfflat"
    ),
    pytest.param("qdrant", {}, True, id="qdrant-local"),
    pytest.param(
        "qdrant",
        {"url": QDRANT_URL},
        True,
        id="qdrant-remote",
        marks=pytest.mark.skipif(not QDRANT_URL, reason="QDRANT_URL is not set: no Qdrant server to test"),
    ),
    pytest.param(
        "weaviate",
        {"url": WEAVIATE_URL},
        False,
        id="weaviate-remote",
        marks=pytest.mark.skipif(not WEAVIATE_URL, reason="WEAVIATE_URL is not set: no Weaviate server"),
    ),
]


@pytest.fixture(scope="module")
def corpus() -> dict:
    rows = passages(N, seed=3)
    vectors = encode([r["text"] for r in rows])
    # questions about a sample of the passages, phrased unlike the passages themselves
    asked = rows[::40]
    questions = [f"{r['id'].split('#')[1].replace('_', ' ')} of {r['doc_id'].split('/')[1]}?" for r in asked]
    queries = encode(questions)
    ids = [r["id"] for r in rows]
    payloads = [{"doc_id": r["doc_id"], "domain": r["domain"], "version": "v1"} for r in rows]
    return {"ids": ids, "vectors": vectors, "payloads": payloads, "queries": queries}


def exact(corpus: dict, query: np.ndarray, k: int, keep: set[str] | None = None) -> list[tuple[str, float]]:
    scores = corpus["vectors"] @ query
    order = np.argsort(-scores, kind="stable")
    ranked = [(corpus["ids"][i], float(scores[i])) for i in order]
    return [(i, s) for i, s in ranked if keep is None or i in keep][:k]


def agree(found: list, truth: list[tuple[str, float]], is_exact: bool) -> float:
    """Exact: the same ids in the same order (ties within 1e-5 may swap). Returns recall@k."""
    got = [h.id for h in found]
    want = [i for i, _ in truth]
    if is_exact:
        assert len(got) == len(want)
        for position, (hit, (wid, wscore)) in enumerate(zip(found, truth, strict=True)):
            assert hit.id == wid or abs(hit.score - wscore) < 1e-5, (position, got, want)
            assert hit.score == pytest.approx(wscore, abs=1e-4)
    return len(set(got) & set(want)) / max(len(want), 1)


@pytest.fixture
def make_store(tmp_path: Path, request: pytest.FixtureRequest):  # noqa: ANN201
    made = []

    def build(backend: str, params: dict):  # noqa: ANN202
        if params.get("url") == PG:
            params = {**params, "url": request.getfixturevalue("pg_url")}
        name = f"retro_test_{uuid.uuid4().hex[:8]}"
        path = str(tmp_path / f"store-{len(made)}")
        store = STORES.build(backend, dim=384, path=path, name=name, **params)
        made.append(store)
        return store

    yield build
    for store in made:
        store.drop()
        store.close()


@pytest.mark.parametrize(("backend", "params", "is_exact"), BACKENDS)
def test_backend_agrees_with_exact_search(backend, params, is_exact, corpus, make_store, tmp_path) -> None:  # noqa: ANN001
    ids, vectors, payloads, queries = corpus["ids"], corpus["vectors"], corpus["payloads"], corpus["queries"]
    store = make_store(backend, params)
    half = N // 2
    store.upsert(ids[:half], vectors[:half], payloads[:half])
    store.upsert(ids[half:], vectors[half:], payloads[half:])
    assert store.count() == N
    assert sorted(store.ids()) == sorted(ids)

    def check(where: dict | None, keep: set[str] | None) -> float:
        recalls = []
        for query, hits in zip(queries, store.search(queries, K, where), strict=True):
            if keep is not None:
                assert {h.id for h in hits} <= keep
            recalls.append(agree(hits, exact(corpus, query, K, keep), is_exact))
        return float(np.mean(recalls))

    assert check(None, None) >= 0.95
    law = {i for i, p in zip(ids, payloads, strict=True) if p["domain"] == "law"}
    assert check({"domain": "law"}, law) >= 0.95
    docs = sorted({p["doc_id"] for p in payloads})[:40]
    in_docs = {i for i, p in zip(ids, payloads, strict=True) if p["doc_id"] in docs}
    assert check({"doc_id": docs}, in_docs) >= 0.95

    removed = ids[::10]
    store.delete(removed)
    corpus_left = {
        "ids": [i for i in ids if i not in set(removed)],
        "vectors": np.delete(vectors, np.arange(0, N, 10), axis=0),
    }
    assert store.count() == N - len(removed)
    recalls = []
    for query, hits in zip(queries, store.search(queries, K), strict=True):
        assert not {h.id for h in hits} & set(removed)
        recalls.append(agree(hits, exact(corpus_left, query, K), is_exact))
    assert np.mean(recalls) >= 0.95

    # upsert replaces: the same id with a new vector and payload, never a duplicate
    target = ids[1]
    store.upsert([target], queries[:1], [{"doc_id": "replaced", "domain": "law", "version": "v2"}])
    assert store.count() == N - len(removed)
    assert store.payload(target) == {"doc_id": "replaced", "domain": "law", "version": "v2"}
    top = store.search(queries[:1], 1, {"version": "v2"})[0]
    assert [h.id for h in top] == [target]

    # a clone is an independent version: changing it leaves the original as it was
    clone = store.clone(tmp_path / "clone", f"retro_test_{uuid.uuid4().hex[:8]}")
    try:
        clone.delete([target])
        assert clone.count() == store.count() - 1
        assert store.payload(target) is not None
    finally:
        clone.drop()
        clone.close()


@pytest.mark.parametrize(("backend", "params", "is_exact"), BACKENDS)
def test_bad_batches_are_refused_and_change_nothing(backend, params, is_exact, corpus, make_store) -> None:  # noqa: ANN001
    ids, vectors, payloads = corpus["ids"][:300], corpus["vectors"][:300], corpus["payloads"][:300]
    store = make_store(backend, params)
    store.upsert(ids, vectors, payloads)
    before = [h.id for h in store.search(vectors[:1], 5)[0]]
    with pytest.raises(StoreInputError, match=r"shape \(n, 384\)"):
        store.upsert(["x1"], np.zeros((1, 128), dtype=np.float32), [{}])
    poisoned = vectors[:2].copy()
    poisoned[1, 7] = np.nan
    with pytest.raises(StoreInputError, match="NaN.*'fresh-2'"):
        store.upsert(["fresh-1", "fresh-2"], poisoned, [{}, {}])
    with pytest.raises(StoreInputError, match="duplicate ids.*'dup'"):
        store.upsert(["dup", "dup"], vectors[:2], [{}, {}])
    with pytest.raises(StoreInputError, match="384 dimensions"):
        store.search(np.zeros((1, 10), dtype=np.float32), 3)
    assert store.count() == 300 and store.payload("fresh-1") is None
    assert [h.id for h in store.search(vectors[:1], 5)[0]] == before


def test_faiss_snapshot_reopens_with_tombstones(corpus, tmp_path) -> None:  # noqa: ANN001
    ids, vectors, payloads = corpus["ids"], corpus["vectors"], corpus["payloads"]
    store = STORES.build("faiss", dim=384, factory="HNSW32")
    store.upsert(ids, vectors, payloads)
    store.delete(ids[:50])  # below the compaction threshold: kept as tombstones
    assert store.info()["entries"] == N and store.count() == N - 50
    store.save(tmp_path / "snap")
    again = STORES.build("faiss", dim=384, path=str(tmp_path / "snap"))
    assert again.count() == N - 50
    hits = again.search(vectors[:60], 3)
    assert not {h.id for row in hits for h in row} & set(ids[:50])
    store.delete(ids[50 : N // 2])  # past a quarter deleted: rebuilt without them
    assert store.info()["entries"] == store.count() == N - N // 2


def test_faiss_refuses_unusable_settings() -> None:
    with pytest.raises(StoreInputError, match="factory string 'IVF,Bogus'"):
        STORES.build("faiss", dim=384, factory="IVF,Bogus")
    store = STORES.build("faiss", dim=8, factory="IVF64,Flat")
    with pytest.raises(StoreInputError, match="could not be trained on 10 vectors"):
        store.upsert([f"c{i}" for i in range(10)], np.ones((10, 8), dtype=np.float32), [{}] * 10)


@pytest.mark.parametrize(
    ("backend", "url"),
    [
        ("qdrant", "http://127.0.0.1:9"),
        ("weaviate", "http://127.0.0.1:9"),
        ("pgvector", "postgresql://u@127.0.0.1:9/x"),
    ],
)
def test_unreachable_server_is_a_clear_error(backend: str, url: str) -> None:
    with pytest.raises(StoreUnavailable, match="127.0.0.1:9"):
        STORES.build(backend, dim=384, url=url, timeout=2)
