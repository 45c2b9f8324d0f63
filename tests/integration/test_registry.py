"""Registration against a real MLflow SQLite store: linked versions, lineage tags, the gate, loading."""

import json
from pathlib import Path

import pytest

from components.adapters.base_model import load_base_model
from components.adapters.builder import build_retro_model
from components.embed.encoder import encode
from components.registry import mlflow_registry as reg
from components.stages import register
from components.stages.common import Layout
from components.stores.retriever import Retriever


def _metrics(adapter_f1: float, base_f1: float = 0.1) -> dict:
    system = lambda f1: {"em": f1, "f1": f1, "latency_ms_mean": 10.0, "latency_ms_p95": 12.0}  # noqa: E731
    return {
        "k": 3,
        "recall@3": 0.9,
        "corpus_version": "v1",
        "questions": 4,
        "base": system(base_f1),
        "rag": system(0.2),
        "adapter": system(adapter_f1),
    }


@pytest.fixture()
def project(tmp_path: Path, tiny_model: Path) -> tuple[Layout, dict]:
    layout = Layout(tmp_path)
    texts = ["Zorvex is made by Talmir Labs.", "The Varnholt Act dates from 1999."]
    retriever = Retriever.build(
        ["c1", "c2"], texts, encode(texts), [{"doc_id": "a"}, {"doc_id": "b"}], "all-MiniLM-L6-v2"
    )
    retriever.save(layout.index)
    (layout.index / "manifest.json").write_text(
        json.dumps(
            {
                "content_hash": "abc123",
                "embedder": "all-MiniLM-L6-v2",
                "dim": 384,
                "count": 2,
                "corpus_version": "v1",
                "store": "faiss",
                "retrieval_mode": "hybrid",
                "documents": 2,
            }
        )
    )
    base, tokenizer = load_base_model(str(tiny_model))
    build_retro_model(base, tokenizer, "lora", {"r": 2}, max_trainable_share=None).save(
        layout.current_adapter, {"base_model": str(tiny_model), "method": "lora", "retrieval": {"k": 2}}
    )
    layout.dvc_lock.write_text(
        "schema: '2.0'\nstages:\n  index:\n    outs:\n    - path: data/index\n      md5: 0123.dir\n"
    )
    params = {"register": {"tracking_uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db"}}
    return layout, params


def _register(layout: Layout, params: dict, adapter_f1: float) -> dict:
    layout.metrics.mkdir(parents=True, exist_ok=True)
    (layout.metrics / "evaluate.json").write_text(json.dumps(_metrics(adapter_f1)))
    return register.run(params, layout)


def test_linked_versions_lineage_and_gate(project: tuple[Layout, dict]) -> None:
    layout, params = project
    first = _register(layout, params, 0.5)
    assert first["promoted"] and first["alias"] == "challenger"
    client = reg.configure(params["register"]["tracking_uri"])
    adapter = client.get_model_version(reg.ADAPTER_MODEL, first["adapter_version"])
    assert adapter.tags["index_version"] == str(first["index_version"])
    assert adapter.tags["adapter.f1"] == "0.5" and adapter.tags["gate"] == "passed"
    assert adapter.tags["dvc.index"] and adapter.tags["dvc_lock"] and "git_commit" in adapter.tags
    assert client.get_model_version_by_alias(reg.ADAPTER_MODEL, "challenger").version == adapter.version

    # a person promotes v1; a worse adapter is registered but not promoted; the same index is reused
    client.set_registered_model_alias(reg.ADAPTER_MODEL, "champion", adapter.version)
    worse = _register(layout, params, 0.4)
    assert not worse["promoted"] and "does not beat champion" in worse["reason"]
    assert worse["index_version"] == first["index_version"]
    assert len(client.search_model_versions(f"name = '{reg.INDEX_MODEL}'")) == 1
    assert client.get_model_version_by_alias(reg.ADAPTER_MODEL, "challenger").version == adapter.version

    better = _register(layout, params, 0.7)
    assert better["promoted"] and "beats champion" in better["reason"]
    assert str(client.get_model_version_by_alias(reg.ADAPTER_MODEL, "challenger").version) == str(
        better["adapter_version"]
    )

    pair = reg.download_pair(client, "champion", layout.root / "download")
    assert pair.adapter_version == str(adapter.version)
    assert pair.index_version == str(first["index_version"])
    assert (pair.adapter_dir / "adapter_model.safetensors").exists()
    assert Retriever.load(pair.index_dir).retrieve(["Who makes Zorvex?"], 1)[0][0].id == "c1"


def test_adapter_worse_than_base_is_never_promoted(project: tuple[Layout, dict]) -> None:
    layout, params = project
    result = _register(layout, params, 0.05)
    assert not result["promoted"] and "does not beat the base model" in result["reason"]


def test_missing_alias_is_a_clear_error(project: tuple[Layout, dict]) -> None:
    _, params = project
    client = reg.configure(params["register"]["tracking_uri"])
    with pytest.raises(LookupError, match="no retro-adapter version has alias 'champion'"):
        reg.download_pair(client, "champion")


def test_answerer_serves_the_aliased_pair(project: tuple[Layout, dict]) -> None:
    from components.serving.answerer import Answerer

    layout, params = project
    first = _register(layout, params, 0.5)
    answerer = Answerer.from_registry(params["register"]["tracking_uri"], "challenger", layout.root / "serve")
    result = answerer.answer("Who makes Zorvex?", max_new_tokens=3)
    assert isinstance(result["answer"], str)
    assert [s["doc_id"] for s in result["sources"]][0] == "a" and len(result["sources"]) == 2
    assert (result["adapter_version"], result["index_version"]) == (
        str(first["adapter_version"]),
        str(first["index_version"]),
    )
