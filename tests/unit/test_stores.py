import numpy as np
import pytest

from components.stores import STORES
from components.stores.base import Hit
from components.stores.retriever import Retriever, reciprocal_rank_fusion


def _data(n: int = 300, dim: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"c{i}" for i in range(n)]
    payloads = [{"doc_id": f"d{i % 30}", "domain": ["law", "finance"][i % 2]} for i in range(n)]
    return ids, vectors, payloads


def _exact(vectors: np.ndarray, ids: list[str], query: np.ndarray, k: int, keep=None) -> list[str]:
    scores = vectors @ query
    order = [i for i in np.argsort(-scores, kind="stable") if keep is None or keep(i)]
    return [ids[i] for i in order[:k]]


def test_flat_faiss_agrees_with_exact_search_including_filters_deletes_and_snapshots(
    tmp_path,
) -> None:
    ids, vectors, payloads = _data()
    store = STORES.build("faiss", dim=32, factory="Flat")
    store.upsert(ids, vectors, payloads)
    queries = vectors[:5] + 0.1
    for q, hits in zip(queries, store.search(queries, 10), strict=True):
        assert [h.id for h in hits] == _exact(vectors, ids, q, 10)
        assert hits[0].score == pytest.approx(float(np.max(vectors @ q)), rel=1e-5)
    law = store.search(queries, 10, where={"domain": "law"})
    for q, hits in zip(queries, law, strict=True):
        assert [h.id for h in hits] == _exact(vectors, ids, q, 10, keep=lambda i: i % 2 == 0)
        assert all(h.payload["domain"] == "law" for h in hits)
    gone = _exact(vectors, ids, queries[0], 3)
    store.delete(gone)
    assert store.count() == len(ids) - 3
    assert not set(gone) & {h.id for h in store.search(queries[:1], 10)[0]}
    store.upsert(["c1"], -vectors[1:2], [{"doc_id": "new"}])  # upsert replaces, never duplicates
    assert store.count() == len(ids) - 3 + (1 if "c1" in gone else 0)
    assert store.payload("c1") == {"doc_id": "new"}
    store.save(tmp_path / "snap")
    again = STORES.build("faiss", dim=32, path=str(tmp_path / "snap"))
    assert again.count() == store.count()
    assert [h.id for h in again.search(queries, 7)[2]] == [h.id for h in store.search(queries, 7)[2]]


def test_unknown_backend_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="known: faiss"):
        STORES.build("pinecone", dim=3)


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    a = [Hit("x", 0.9), Hit("y", 0.8), Hit("z", 0.1)]
    b = [Hit("y", 9.0), Hit("w", 5.0)]
    fused = reciprocal_rank_fusion([a, b], k=3, rrf_k=60)
    assert [h.id for h in fused] == ["y", "x", "w"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)


def test_hybrid_retrieval_finds_identifiers_dense_misses(tmp_path) -> None:
    texts = [
        f"Form {code} starts the {name} procedure."
        for code, name in [
            ("TAR-854", "Drakaor"),
            ("SEL-112", "Mirvel"),
            ("ORK-377", "Talsun"),
            ("BEL-903", "Quenn"),
        ]
    ]
    texts += ["Unrelated text about weather in Varnholt.", "Another note on budgets."]
    from components.embed.encoder import encode

    ids = [f"c{i}" for i in range(len(texts))]
    retriever = Retriever.build(ids, texts, encode(texts), [{"doc_id": i} for i in ids], "all-MiniLM-L6-v2")
    hits = retriever.retrieve(["Which procedure begins with form SEL-112?"], 2)[0]
    assert hits[0].id == "c1"
    retriever.save(tmp_path / "idx")
    loaded = Retriever.load(tmp_path / "idx")
    assert [h.id for h in loaded.retrieve(["form BEL-903"], 3)[0]][0] == "c3"
    dense_only = Retriever.load(tmp_path / "idx", mode="dense")
    assert dense_only.mode == "dense" and len(dense_only.retrieve(["x"], 3)[0]) == 3


def test_server_backends_translate_names_and_filters() -> None:
    from components.stores.qdrant_store import point_id, qdrant_filter
    from components.stores.weaviate_store import collection_name, weaviate_filter

    assert collection_name("retro_3f2a-b") == "Retro_3f2a_b"
    assert collection_name("9lives") == "Retro_9lives"
    assert point_id("law/x#1") == point_id("law/x#1") != point_id("law/x#2")
    flt = qdrant_filter({"doc_id": ["a", "b"], "version": "v2"})
    assert [c.key for c in flt.must] == ["doc_id", "version"]
    assert flt.must[0].match.any == ["a", "b"] and flt.must[1].match.value == "v2"
    assert qdrant_filter(None) is None and weaviate_filter({}) is None
    both = weaviate_filter({"doc_id": ["a"], "version": "v2"})
    assert type(both).__name__ == "_FilterAnd" and len(both.filters) == 2
