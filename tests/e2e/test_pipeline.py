"""The whole pipeline through `retro pipeline` (Prefect flow → dvc repro per stage) on a tiny corpus.

A tiny random model stands in for the generator; the embedder is the real packaged MiniLM. The
runs report to a real Prefect server with its UI (`retro services`' Prefect), which a browser opens
to find the evaluation artifact; one run starts its own temporary server as `make demo` does.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from components.cli.services import Ports, Services
from components.registry import mlflow_registry as reg
from components.serving.app import create_app
from components.serving.settings import ServeSettings
from components.stores.retriever import Retriever
from flows.pipeline import pipeline_stages
from tests.conftest import BIN, KB, make_project, run_checked
from tests.fixtures.browser import check_evaluation_artifact, screenshot


def _run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return run_checked(args, cwd, env)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """`prefect server start` (API and UI) on a free port, as `retro services up` starts it."""
    folder = tmp_path_factory.mktemp("prefect-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    services = Services(root=folder, home=folder / ".services", ports=Ports(prefect=port))
    services.start("prefect")
    yield services
    services.stop("prefect")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path, tiny_model: Path, prefect_server):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("project")
    env = make_project(root, tiny_corpus, tiny_model, prefect_server.prefect_api_url)
    first = _run([str(BIN / "retro"), "pipeline"], root, env)
    return root, env, first


def _client(root: Path):  # noqa: ANN202
    return reg.configure(f"sqlite:///{root}/mlruns/mlflow.db")


def test_every_stage_ran_and_wrote_its_outputs(project) -> None:  # noqa: ANN001
    root, env, first = project
    assert "| adapter + retrieval |" in first.stdout and "registered retro-kb-index v1" in first.stdout
    metrics = json.loads((root / "data/metrics/evaluate.json").read_text())
    assert {"base", "rag", "adapter"} <= set(metrics) and metrics["questions"] == 6
    assert 0.0 <= metrics["chunk_recall@3"] <= 1.0 and 0.0 <= metrics["doc_recall@3"] <= 1.0
    assert json.loads((root / "data/metrics/ingest.json").read_text())["versions"] == 2
    continual = json.loads((root / "data/metrics/continual.json").read_text())
    assert continual["versions_learned"] == ["v1", "v2"] and continual["updates_this_run"] == 1
    dag = _run([str(BIN / "dvc"), "dag", "--dot"], root, env).stdout
    assert all(f'"{s}"' in dag or s in dag for s in pipeline_stages(root))


def test_registry_holds_one_linked_pair(project) -> None:  # noqa: ANN001
    root, _, _ = project
    client = _client(root)
    adapters = client.search_model_versions(f"name = '{KB.adapter}'")
    indexes = client.search_model_versions(f"name = '{KB.index}'")
    assert len(adapters) == 1 and len(indexes) == 1
    tags = adapters[0].tags
    assert tags["index_version"] == str(indexes[0].version)
    assert tags["corpus_version"] == "v2" and tags["adapter_method"] == "lora"
    run = client.get_run(adapters[0].run_id).data  # lineage, figures and plots: on the linked run
    assert run.tags["dvc.evaluate"] and run.tags["git_commit"] and run.tags["prefect_flow_run_id"]
    plots = {a.path for a in client.list_artifacts(adapters[0].run_id, "evaluation/plots")}
    assert plots == {
        f"evaluation/plots/{n}" for n in ("systems.png", "recall_at_k.png", "answer_lengths.png")
    }


def test_the_prefect_ui_shows_the_evaluation_artifact(project, prefect_server, page, tmp_path: Path) -> None:  # noqa: ANN001
    """A person finds the run's evaluation table and plots in the Prefect UI."""
    check_evaluation_artifact(page, prefect_server.prefect_api_url.removesuffix("/api"))
    screenshot(page, tmp_path, "prefect-evaluation-artifact.png")


def test_second_run_skips_every_stage_and_registers_nothing(project) -> None:  # noqa: ANN001
    root, env, _ = project
    assert "up to date" in _run([str(BIN / "dvc"), "status"], root, env).stdout
    without_server = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}  # as in `make demo`
    second = _run([str(BIN / "retro"), "pipeline"], root, without_server)
    assert "Starting temporary server" in second.stdout + second.stderr
    assert len(_client(root).search_model_versions(f"name = '{KB.adapter}'")) == 1


def test_new_corpus_version_updates_the_adapter_without_retraining(project) -> None:  # noqa: ANN001
    root, env, _ = project
    kb = root / "data" / "raw" / "kb"
    incoming = root.parent / "incoming"  # the next version arrives from outside the corpus
    shutil.copytree(kb / "v2", incoming)
    items = [json.loads(line) for line in (incoming / "qa.jsonl").read_text().splitlines()]
    target = next(i for i in items if i["split"] == "train")
    doc = incoming / "docs" / f"{target['doc_id']}.md"
    doc.write_text(doc.read_text().replace(target["answer"], "Qorvath Prime"))
    target["answer"] = "Qorvath Prime"
    (incoming / "qa.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))

    done = _run([str(BIN / "retro"), "update", "--corpus", str(incoming)], root, env)
    assert "corpus version v3 added" in done.stdout and (kb / "v3" / "docs").is_dir()
    by_version = json.loads((root / "data/metrics/evaluate.json").read_text())["adapter_by_version"]
    assert list(by_version)[0] == "v1" and sum(v["questions"] for v in by_version.values()) > 0
    assert json.loads((root / "data/metrics/train.json").read_text())["skipped"] is True
    continual = json.loads((root / "data/metrics/continual.json").read_text())
    assert continual["versions_learned"] == ["v1", "v2", "v3"] and continual["updates_this_run"] == 1
    assert continual["last_update"]["new_examples"] == 1
    client = _client(root)
    adapters = sorted(client.search_model_versions(f"name = '{KB.adapter}'"), key=lambda v: int(v.version))
    assert len(adapters) == 2 and adapters[-1].tags["corpus_version"] == "v3"
    assert adapters[-1].tags["index_version"] != adapters[0].tags["index_version"]
    # the index was updated from its parent (one changed chunk), and the registry records the chain
    embedded = json.loads((root / "data/metrics/embed.json").read_text())
    indexes = client.search_model_versions(f"name = '{KB.index}'")
    indexes = sorted(indexes, key=lambda v: int(v.version))
    assert len(indexes) == 2
    child, parent = indexes[-1].tags, indexes[0].tags
    assert child["parent_version"] == str(indexes[0].version)
    assert child["parent_content_hash"] == parent["content_hash"] != child["content_hash"]
    assert child["update_mode"] == "incremental"
    assert int(child["chunks_added"]) == int(child["chunks_removed"]) == embedded["embedded"] >= 1
    assert embedded["reused"] == embedded["chunks"] - embedded["embedded"]


def test_bad_params_value_names_the_key(project) -> None:  # noqa: ANN001
    root, env, _ = project
    scratch = root.parent / "scratch"
    scratch.mkdir(exist_ok=True)
    params = (root / "params.yaml").read_text()
    assert "overlap: 24" in params
    (scratch / "params.yaml").write_text(params.replace("overlap: 24", "overlap: 500"))
    proc = subprocess.run(
        [str(BIN / "python"), "-m", "components.stages.chunk"],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "chunk" in proc.stderr and "overlap must be smaller" in proc.stderr


def test_a_registered_name_of_another_corpus_fails_before_training(project) -> None:  # noqa: ANN001
    root, env, _ = project
    shutil.copytree(root / "data" / "raw" / "kb", root / "data" / "raw" / "other", dirs_exist_ok=True)
    params = (root / "params.yaml").read_bytes()
    trained = (root / "data/metrics/train.json").read_bytes()
    overrides = ["-S", "ingest.source=data/raw/other", "-S", "register.model_name=retro-kb"]
    proc = subprocess.run(
        [str(BIN / "retro"), "pipeline", *overrides], cwd=root, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "'retro-kb-adapter' holds corpus 'data/raw/kb', not 'data/raw/other'" in proc.stderr
    assert "register.model_name" in proc.stderr and "'retro-other'" in proc.stderr
    assert (root / "params.yaml").read_bytes() == params  # nothing written, nothing run
    assert (root / "data/metrics/train.json").read_bytes() == trained


def _cited(http: TestClient, question: str) -> list[str]:
    response = http.post("/v1/retrieve", json={"question": question, "k": 5})
    assert response.status_code == 200, response.text
    return [s["doc_id"] for s in response.json()["sources"]]


def test_a_forgotten_document_is_gone_everywhere(project, tmp_path: Path) -> None:  # noqa: ANN001
    """`retro forget`: afterwards retrieval never returns the document, the service (following the
    champion, a version that still holds it) never cites it, the replay reservoir holds none of its
    questions and the registry marks the versions that held it."""
    root, env, _ = project
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    client = reg.configure(uri)
    first = max(client.search_model_versions(f"name = '{KB.adapter}'"), key=lambda v: int(v.version))
    client.set_registered_model_alias(KB.adapter, "champion", first.version)  # a person promotes it
    replayed = json.loads((root / "data/models/current/replay.json").read_text())["items"]
    target = replayed[0]
    doc, question = target["doc_id"], target["question"]

    settings = ServeSettings(alias="champion", poll_seconds=3600, download_dir=str(tmp_path / "serve"))
    with TestClient(create_app(settings, uri, KB.name)) as http:
        for _ in range(120):
            if http.get("/readyz").status_code == 200:
                break
            time.sleep(0.5)
        assert doc in _cited(http, question)  # cited before (and now in the cache)

        done = run_checked([str(BIN / "retro"), "forget", doc], root, env)
        assert "closed book before" in done.stdout
        http.app.state.service.promoter.poll()  # what the next poll does
        assert doc not in _cited(http, question)
        answer = http.post("/v1/answer", json={"question": question})
        assert answer.status_code == 200 and doc not in [s["doc_id"] for s in answer.json()["sources"]]

    report = json.loads((root / "data/metrics/forget.json").read_text())
    assert report["documents"] == [doc] and report["closed_book_before"]["questions"] >= 1
    assert report["marked"]["index_versions"] and str(first.version) in report["marked"]["adapter_versions"]
    hits = Retriever.load(root / "data" / "index").retrieve([question], 50)[0]
    assert hits and doc not in {h.payload["doc_id"] for h in hits}
    items = json.loads((root / "data/models/current/replay.json").read_text())["items"]
    assert items and all(i["doc_id"] != doc for i in items)
    index = client.get_model_version(KB.index, report["marked"]["index_versions"][0])
    assert json.loads(index.tags["forgotten"]) == [doc]
    assert json.loads(client.get_registered_model(KB.index).tags["forgotten_documents"]) == [doc]
