"""Index versions through the stages: v1 -> v2 with 10% of documents changed is an incremental
update that embeds only the changed chunks, records its parent, finds the new facts and not the
replaced ones; a failed update (bad vectors, unreachable server) leaves the previous version."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.core.config import load_params_file, set_dotted
from components.core.paths import Paths
from components.data.synthetic import DOMAIN_BY_NAME, DOMAINS, VALUE_MAKERS, KnowledgeBase
from components.stages import chunk, embed, index, ingest
from components.stores import StoreInputError, StoreUnavailable
from components.stores.retriever import Retriever
from tests.conftest import ROOT, run_stage

CHANGED_DOCS = 4  # of 40: 10%


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """Versions v1 and v2 of a 40-document corpus; v2 revises one fact in each of 4 documents."""
    out = tmp_path_factory.mktemp("kb")
    kb = KnowledgeBase(seed=11)
    for domain in DOMAINS:
        kb.add_entities(domain.name, 8)
    kb.write(out / "v1")
    rng = random.Random(3)
    changes = []
    for doc_id in rng.sample(sorted(kb.entities), CHANGED_DOCS):
        entity = kb.entities[doc_id]
        attr = DOMAIN_BY_NAME[entity.domain].attributes[0]
        old = entity.facts[attr.name]
        while entity.facts[attr.name] == old:
            entity.facts[attr.name] = VALUE_MAKERS[attr.value](rng)
        new = entity.facts[attr.name]
        changes.append({"doc_id": doc_id, "qid": f"{doc_id}#{attr.name}", "old": old, "new": new})
    kb.write(out / "v2")
    return out, changes


def _params(source: Path, store: str, store_params: dict) -> dict:
    params = load_params_file(ROOT / "params.yaml")
    set_dotted(params, "ingest.source", str(source))
    set_dotted(params, "index.store", store)
    set_dotted(params, "index.store_params", store_params)
    return params


def _stages(params: dict, layout: Paths, last=index):  # noqa: ANN001, ANN202
    results = [run_stage(stage, params, layout.root) for stage in (ingest, chunk, embed)]
    return results[-1], (run_stage(last, params, layout.root) if last else None)


@pytest.mark.parametrize(
    ("store", "store_params", "shards"),
    [
        ("faiss", {"factory": "Flat"}, 0),
        ("faiss", {"factory": "HNSW32"}, 0),
        ("qdrant", {}, 0),
        ("pgvector", {"url": "pg_database", "index": "hnsw"}, 0),
        ("faiss", {"factory": "IVF4,Flat", "index_params": "nprobe=4"}, 2),
    ],
    ids=["faiss-flat", "faiss-hnsw", "qdrant-local", "pgvector-server", "faiss-ivf-built-from-shards"],
)
def test_update_embeds_only_changed_chunks_and_records_its_parent(
    tmp_path: Path, corpus, store: str, store_params: dict, shards: int, request: pytest.FixtureRequest
) -> None:  # noqa: ANN001
    full, changes = corpus
    source = tmp_path / "corpus"
    shutil.copytree(full / "v1", source / "v1")
    layout = Paths(tmp_path)
    if store_params.get("url") == "pg_database":  # on a PostgreSQL server started for the tests
        store_params = {**store_params, "url": request.getfixturevalue("pg_database")}
    params = _params(source, store, store_params)
    if shards:  # v1 is built as shard tasks on a local Dask cluster, v2 updates the merged index
        request.getfixturevalue("prefect_api")
        set_dotted(params, "index.sharding", {"shards": shards, "workers": 2})

    embedded_v1, first = _stages(params, layout)
    assert embedded_v1["embedded"] == embedded_v1["chunks"] > 0 and embedded_v1["reused"] == 0
    assert first["index_version"] == 1 and first["parent"] is None and first["update"]["mode"] == "full"
    assert first["update"].get("shards") == (shards or None)

    shutil.copytree(full / "v2", source / "v2")
    embedded_v2, second = _stages(params, layout)
    chunks = pd.read_parquet(layout.chunks)
    v1_ids = set(chunks.loc[chunks["version"] == "v1", "chunk_id"])
    v2_ids = set(chunks.loc[chunks["version"] == "v2", "chunk_id"])
    changed_docs = {c["doc_id"] for c in changes}
    assert {d for d in chunks.loc[chunks["chunk_id"].isin(v2_ids - v1_ids), "doc_id"]} == changed_docs
    # only the changed chunks were embedded again; everything else came from the previous run
    assert embedded_v2["embedded"] == len(v2_ids - v1_ids) >= CHANGED_DOCS
    assert embedded_v2["reused"] == len(v1_ids)
    assert second["index_version"] == 2 and second["corpus_version"] == "v2"
    assert second["parent"] == {"index_version": 1, "content_hash": first["content_hash"]}
    assert second["update"] == {
        "mode": "incremental",
        "added": len(v2_ids - v1_ids),
        "removed": len(v1_ids - v2_ids),
        "kept": len(v1_ids & v2_ids),
        "payload_updated": 0,
    }
    assert second["count"] == len(v2_ids)

    items = [json.loads(line) for line in (full / "v2/qa.jsonl").read_text().splitlines()]
    questions = {item["id"]: item for item in items}
    retriever = Retriever.load(layout.index)
    try:
        assert sorted(retriever.store.ids()) == sorted(v2_ids)
        for change in changes:
            hits = retriever.retrieve([questions[change["qid"]]["question"]], 5)[0]
            assert hits[0].payload["doc_id"] == change["doc_id"] and change["new"] in hits[0].payload["text"]
            # the changed chunk is labelled with the version it appeared in and its domain
            assert hits[0].payload["version"] == "v2"
            assert hits[0].payload["domain"] == change["doc_id"].split("/")[0]
            domain_only = retriever.retrieve([questions[change["qid"]]["question"]], 3, {"domain": "law"})[0]
            assert all(h.payload["domain"] == "law" for h in domain_only)
            for hit in hits:
                same_doc = hit.payload["doc_id"] == change["doc_id"]
                assert not (same_doc and change["old"] in hit.payload["text"])
    finally:
        retriever.close()

    # a second run over the same chunks is no new version
    assert run_stage(index, params, layout.root)["index_version"] == 2
    if store == "pgvector":  # v2 is a new table copied from v1's in SQL; v1's stays for what serves it
        tables = _pg_tables(store_params["url"])
        assert {f"retro_{first['content_hash']}", f"retro_{second['content_hash']}"} <= tables


def _pg_tables(url: str) -> set[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_a_failed_pgvector_update_leaves_the_previous_table(tmp_path: Path, corpus, pg_database: str) -> None:  # noqa: ANN001
    full, changes = corpus
    source = tmp_path / "corpus"
    shutil.copytree(full / "v1", source / "v1")
    layout = Paths(tmp_path)
    params = _params(source, "pgvector", {"url": pg_database, "index": "none"})
    _, first = _stages(params, layout)
    before = _pg_tables(pg_database)
    shutil.copytree(full / "v2", source / "v2")
    _stages(params, layout, last=None)
    ids = json.loads((layout.embeddings / "ids.json").read_text())
    vectors = np.load(layout.embeddings / "vectors.npy")
    chunks = pd.read_parquet(layout.chunks)
    fresh = set(chunks.loc[chunks["version"] == "v2", "chunk_id"]) - set(
        chunks.loc[chunks["version"] == "v1", "chunk_id"]
    )
    vectors[[i for i, c in enumerate(ids) if c in fresh]] = np.nan
    np.save(layout.embeddings / "vectors.npy", vectors)
    with pytest.raises(StoreInputError, match="NaN"):
        run_stage(index, params, layout.root)
    assert _pg_tables(pg_database) == before  # the copy made for v2 was dropped
    _assert_still(layout, first, changes)


def _flat_v1(tmp_path: Path, full: Path) -> tuple[Path, Paths, dict, dict]:
    """v1 of the corpus through ingest, chunk, embed and index (exact FAISS)."""
    source = tmp_path / "corpus"
    shutil.copytree(full / "v1", source / "v1")
    layout = Paths(tmp_path)
    params = _params(source, "faiss", {"factory": "Flat"})
    _, first = _stages(params, layout)
    return source, layout, params, first


def test_failed_updates_leave_the_previous_version_usable(tmp_path: Path, corpus) -> None:  # noqa: ANN001
    full, changes = corpus
    source, layout, params, first = _flat_v1(tmp_path, full)

    # v2's new chunks get NaN vectors: the store refuses them and v1 stays in place
    shutil.copytree(full / "v2", source / "v2")
    _stages(params, layout, last=None)
    ids = json.loads((layout.embeddings / "ids.json").read_text())
    vectors = np.load(layout.embeddings / "vectors.npy")
    chunks = pd.read_parquet(layout.chunks)
    of = {v: set(chunks.loc[chunks["version"] == v, "chunk_id"]) for v in ("v1", "v2")}
    fresh = of["v2"] - of["v1"]
    vectors[[i for i, c in enumerate(ids) if c in fresh]] = np.nan
    np.save(layout.embeddings / "vectors.npy", vectors)
    with pytest.raises(StoreInputError, match="NaN"):
        run_stage(index, params, layout.root)
    _assert_still(layout, first, changes)

    # an unreachable Qdrant server: a clear error naming it, and v1 stays in place
    set_dotted(params, "index.store", "qdrant")
    set_dotted(params, "index.store_params", {"url": "http://127.0.0.1:9", "timeout": 2})
    with pytest.raises(StoreUnavailable, match="127.0.0.1:9"):
        run_stage(index, params, layout.root)
    _assert_still(layout, first, changes)


def _assert_still(layout: Paths, manifest: dict, changes: list[dict]) -> None:
    assert json.loads((layout.index / "manifest.json").read_text()) == manifest
    assert not layout.index.with_name("index.tmp").exists()
    retriever = Retriever.load(layout.index)
    try:
        hits = retriever.retrieve([changes[0]["doc_id"].split("/")[1]], 3)[0]
        assert hits and retriever.store.count() == manifest["count"]
    finally:
        retriever.close()


def test_snapshots_of_another_schema_are_rebuilt_or_refused(tmp_path: Path, corpus) -> None:  # noqa: ANN001
    from components.core.artifacts import SchemaMismatch
    from components.data.chunking import read_chunks
    from components.stores.manifest import INDEX_SCHEMA, IndexManifest

    source, layout, params, first = _flat_v1(tmp_path, corpus[0])
    # an index written before manifests had a schema version: readers refuse it, the stage rebuilds it
    manifest = json.loads((layout.index / "manifest.json").read_text())
    del manifest["schema_version"]
    (layout.index / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SchemaMismatch, match=r"no schema version.*dvc repro -f index"):
        IndexManifest.read(layout.index)
    rebuilt = run_stage(index, params, layout.root)
    assert (
        rebuilt["schema_version"] == INDEX_SCHEMA
        and rebuilt["update"]["mode"] == "full"
        and rebuilt["parent"] is None
    )
    # a chunk table without a schema version is refused with the command that rebuilds it
    pd.read_parquet(layout.chunks).to_parquet(layout.chunks, index=False)
    with pytest.raises(SchemaMismatch, match=r"chunks.parquet has no schema version.*dvc repro -f chunk"):
        read_chunks(layout.chunks)
    with pytest.raises(SchemaMismatch):
        run_stage(index, params, layout.root)
    assert IndexManifest.read(layout.index).content_hash == first["content_hash"]  # left as it was


def test_index_stage_fits_fusion_weights_that_the_snapshot_serves(tmp_path: Path, corpus) -> None:  # noqa: ANN001
    """The manifest records the fitted fusion (on the validation share of the train questions,
    never the test ones) and every reader of the snapshot fuses with it."""
    from components.stores.manifest import IndexManifest

    full, _ = corpus
    source, layout, params, first = _flat_v1(tmp_path, full)
    fusion = first["fusion"]
    qa = pd.read_parquet(layout.qa)
    train = int((qa["split"] == "train").sum())
    assert fusion["tuned"] and 20 <= fusion["questions"] < train / 2, fusion
    assert fusion["chosen_mrr"] >= fusion["equal_mrr"] and set(fusion["mrr"]) == {"rrf", "score"}
    loaded = Retriever.load(layout.index)
    assert loaded.weights == fusion["weights"] == IndexManifest.read(layout.index).fusion["weights"]
    assert run_stage(index, params, layout.root)["index_version"] == 1  # nothing changed: no new version
    # equal weights, asked for with the same chunks: a new version, recorded and served as such
    set_dotted(params, "retrieval.fusion", "equal")
    second = run_stage(index, params, layout.root)
    equal = second["fusion"]
    assert second["index_version"] == 2 and second["update"]["added"] == second["update"]["removed"] == 0
    assert not equal["tuned"] and Retriever.load(layout.index).weights == equal["weights"]
    assert equal["weights"] == {"method": "rrf", "dense": 0.5, "bm25": 0.5}
