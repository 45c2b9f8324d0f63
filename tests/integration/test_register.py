"""Registration against a real MLflow SQLite store: linked versions, lineage tags, the gate, loading."""

from pathlib import Path

import pytest
from registry_project import make_project, register_pair

from components.core.paths import Paths
from components.registry import mlflow_registry as reg
from components.stores.retriever import Retriever


@pytest.fixture()
def project(tmp_path: Path, tiny_model: Path) -> tuple[Paths, dict]:
    params = {"register": {"tracking_uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db"}}
    return make_project(tmp_path, tiny_model), params


def _register(layout: Paths, params: dict, adapter_f1: float) -> dict:
    return register_pair(layout, params, adapter_f1)


def test_linked_versions_lineage_and_gate(project: tuple[Paths, dict]) -> None:
    layout, params = project
    first = _register(layout, params, 0.5)
    assert first["promoted"] and first["alias"] == "challenger"
    client = reg.configure(params["register"]["tracking_uri"])
    adapter = client.get_model_version(reg.ADAPTER_MODEL, first["adapter_version"])
    assert adapter.tags["index_version"] == str(first["index_version"])
    assert adapter.tags["adapter.f1"] == "0.5" and adapter.tags["gate"] == "passed"
    assert adapter.tags["dvc.index"] and adapter.tags["dvc_lock"] and "git_commit" in adapter.tags
    assert client.get_model_version_by_alias(reg.ADAPTER_MODEL, "challenger").version == adapter.version

    # a person promotes v1; a worse adapter fails the gate and is not registered by default
    client.set_registered_model_alias(reg.ADAPTER_MODEL, "champion", adapter.version)
    worse = _register(layout, params, 0.4)
    assert not worse["registered"] and not worse["promoted"] and "does not beat champion" in worse["reason"]
    assert len(client.search_model_versions(f"name = '{reg.ADAPTER_MODEL}'")) == 1
    assert client.get_run(worse["run_id"]).data.tags["gate_reason"] == worse["reason"]

    # with on_gate_failure: register it is kept for audit (gate=failed, no alias); the index is reused
    audited = register_pair(layout, {"register": params["register"] | {"on_gate_failure": "register"}}, 0.4)
    assert audited["registered"] and not audited["promoted"]
    assert audited["index_version"] == first["index_version"]
    assert client.get_model_version(reg.ADAPTER_MODEL, audited["adapter_version"]).tags["gate"] == "failed"
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


def test_adapter_worse_than_base_is_never_promoted(project: tuple[Paths, dict]) -> None:
    layout, params = project
    result = _register(layout, params, 0.05)
    assert not result["promoted"] and "does not beat the base model" in result["reason"]
    client = reg.configure(params["register"]["tracking_uri"])
    assert client.search_model_versions(f"name = '{reg.ADAPTER_MODEL}'") == []


def test_missing_alias_is_a_clear_error(project: tuple[Paths, dict]) -> None:
    _, params = project
    client = reg.configure(params["register"]["tracking_uri"])
    with pytest.raises(LookupError, match="no retro-adapter version has alias 'champion'"):
        reg.download_pair(client, "champion")


def test_answerer_serves_the_aliased_pair(project: tuple[Paths, dict]) -> None:
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
