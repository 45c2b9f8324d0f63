"""Registration against a real MLflow SQLite store: linked versions, lineage tags, the gate, loading."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from registry_project import TEXTS, make_project, register_pair, write_evaluation

from components.core.drills import KILL_ENV
from components.core.paths import Paths
from components.registry import mlflow_registry as reg
from components.stores.retriever import Retriever
from tests.conftest import ROOT
from tests.fixtures.tiny_model import random_adapter


@pytest.fixture()
def project(tmp_path: Path, tiny_model: Path) -> tuple[Paths, dict]:
    params = {"register": {"tracking_uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db"}}
    return make_project(tmp_path, tiny_model), params


def _register(layout: Paths, params: dict, adapter_f1: float) -> dict:
    return register_pair(layout, params, adapter_f1)


def test_linked_versions_lineage_and_gate(project: tuple[Paths, dict], tiny_model: Path) -> None:
    layout, params = project
    first = _register(layout, params, 0.5)
    assert first["promoted"] and first["alias"] == "challenger" and "no champion yet" in first["reason"]
    client = reg.configure(params["register"]["tracking_uri"])
    adapter = client.get_model_version(reg.ADAPTER_MODEL, first["adapter_version"])
    assert adapter.tags["index_version"] == str(first["index_version"])
    assert adapter.tags["gate"] == "passed" and "adapter.f1" not in adapter.tags  # figures: on the run
    figures = client.get_run(adapter.run_id).data.metrics
    assert figures["adapter.f1"] == 0.5 and figures["gate.candidate_minus_rag"] == 0.3
    # the line the MLflow UI shows in the versions table
    assert adapter.description.startswith("gate passed · +0.300 vs RAG [+")
    assert adapter.description.endswith("· f1 0.500, RAG 0.200 · 20 held-out questions")
    run_tags = client.get_run(adapter.run_id).data.tags  # the lineage: on the run, not in the table
    assert run_tags["dvc.index"] and run_tags["dvc_lock"] and "git_commit" in run_tags
    assert "dvc.index" not in adapter.tags and len(adapter.tags) <= 8
    assert client.get_model_version_by_alias(reg.ADAPTER_MODEL, "challenger").version == adapter.version

    # no better than plain RAG: refused and, by default, not registered; the run keeps the reason
    level = _register(layout, params, 0.2)
    assert not level["registered"] and not level["promoted"] and "does not lie above 0" in level["reason"]
    assert len(client.search_model_versions(f"name = '{reg.ADAPTER_MODEL}'")) == 1
    run = client.get_run(level["run_id"]).data
    assert run.tags["gate_reason"] == level["reason"] and run.tags["gate"] == "refused"
    assert run.metrics["gate.candidate_minus_rag"] == 0.0
    assert "newest accepted version, retro-adapter v1" in level["parent"]

    # the same adapter on the same index again (a rerun after a crash): the version already there
    again = _register(layout, params, 0.5)
    assert again["reused"] and again["adapter_version"] == first["adapter_version"]
    assert len(client.search_model_versions(f"name = '{reg.ADAPTER_MODEL}'")) == 1

    # another adapter, kept for audit with on_gate_failure: register (gate=failed, no alias); the
    # index is reused
    shutil.rmtree(layout.current_adapter)
    random_adapter(tiny_model, layout.current_adapter, seed=5)
    audited = register_pair(layout, {"register": params["register"] | {"on_gate_failure": "register"}}, 0.2)
    assert audited["registered"] and not audited["promoted"]
    assert audited["index_version"] == first["index_version"]
    audited_version = client.get_model_version(reg.ADAPTER_MODEL, audited["adapter_version"])
    assert audited_version.tags["gate"] == "failed"
    assert audited_version.description.startswith("gate refused ·")
    assert len(client.search_model_versions(f"name = '{reg.INDEX_MODEL}'")) == 1
    assert client.get_model_version_by_alias(reg.ADAPTER_MODEL, "challenger").version == adapter.version

    pair = reg.download_pair(client, "challenger", layout.root / "download")
    assert pair.adapter_version == str(adapter.version)
    assert pair.index_version == str(first["index_version"])
    assert (pair.adapter_dir / "adapter_model.safetensors").exists()
    assert Retriever.load(pair.index_dir).retrieve(["Who makes Zorvex?"], 1)[0][0].id == "c1"


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


def test_the_registered_index_carries_its_finetuned_embedder_to_serving(
    tmp_path: Path, tiny_model: Path
) -> None:
    """Serving a registered pair embeds questions with the fine-tuned embedder the index was built
    with: the registered snapshot holds it, and the version is tagged with its hash."""
    import numpy as np

    from components.embed.encoder import encode
    from components.embed.finetune import finetune_embedder
    from components.serving.answerer import Answerer

    tuned = tmp_path / "finetuned"
    anchors = ["Who makes Zorvex?", "When is the Varnholt Act from?"]
    report = finetune_embedder(
        "all-MiniLM-L6-v2", anchors, TEXTS, None, tuned, epochs=3, batch_size=2, learning_rate=1e-3
    )
    params = {"register": {"tracking_uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db"}}
    layout = make_project(
        tmp_path / "project", tiny_model, embedder=str(tuned), embedder_hash=report["model_hash"]
    )
    registered = register_pair(layout, params, 0.5)
    client = reg.configure(params["register"]["tracking_uri"])
    version = client.get_model_version("retro-index", str(registered["index_version"]))
    assert version.tags["embedder_hash"] == report["model_hash"]
    answerer = Answerer.from_registry(params["register"]["tracking_uri"], "challenger", tmp_path / "serve")
    served = Path(answerer.retriever.embedder)
    assert served.name == "embedder" and (tmp_path / "serve") in served.parents
    question = ["Who makes Zorvex?"]
    assert np.allclose(encode(question, str(served)), encode(question, str(tuned)), atol=1e-5)
    assert not np.allclose(encode(question, str(served)), encode(question, "all-MiniLM-L6-v2"), atol=1e-4)
    assert [s["doc_id"] for s in answerer.answer("Who makes Zorvex?", max_new_tokens=3)["sources"]][0] == "a"


def test_a_register_killed_between_its_two_versions_leaves_no_half_pair(project: tuple[Paths, dict]) -> None:
    layout, params = project
    write_evaluation(layout, 0.5)
    (layout.root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, KILL_ENV: "register:registered-index", "PYTHONPATH": str(ROOT)}
    killed = subprocess.run(
        [sys.executable, "-m", "components.stages.register"], cwd=layout.root, env=env, capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL
    client = reg.configure(params["register"]["tracking_uri"])
    half = client.search_model_versions(f"name = '{reg.INDEX_MODEL}'")
    assert [str(v.version) for v in half] == ["1"]
    assert not client.search_model_versions(f"name = '{reg.ADAPTER_MODEL}'")

    again = register_pair(layout, params, 0.5)  # the next register deletes the half pair first
    assert again["released"] and f"deleted {reg.INDEX_MODEL} v1" in again["released"][0]
    assert [str(v.version) for v in client.search_model_versions(f"name = '{reg.INDEX_MODEL}'")] == ["2"]
    adapter = client.get_model_version(reg.ADAPTER_MODEL, again["adapter_version"])
    assert adapter.tags["index_version"] == "2"
    assert client.get_run(half[0].run_id).info.status == "KILLED"


def test_an_adapter_version_that_fails_takes_its_new_index_version_with_it(
    project: tuple[Paths, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, params = project
    log_artifacts = mlflow.log_artifacts

    def disk_full_for_adapters(local_dir: str, artifact_path: str | None = None) -> None:
        if artifact_path == "adapter":
            raise OSError(28, "No space left on device")
        log_artifacts(local_dir, artifact_path)

    monkeypatch.setattr(mlflow, "log_artifacts", disk_full_for_adapters)  # a full artifact store
    with pytest.raises(OSError, match="No space left"):
        register_pair(layout, params, 0.5)
    client = reg.configure(params["register"]["tracking_uri"])
    assert not client.search_model_versions(f"name = '{reg.INDEX_MODEL}'")
    assert not client.search_model_versions(f"name = '{reg.ADAPTER_MODEL}'")
    monkeypatch.undo()
    again = register_pair(layout, params, 0.5)
    assert again["registered"] and "released" not in again  # nothing was left to clean up
