"""The whole pipeline through `retro pipeline` (Prefect flow → dvc repro per stage) on a tiny corpus.

A tiny random model stands in for the generator; the embedder is the real packaged MiniLM. The
runs report to the session's Prefect API, except one that starts its own temporary server as
`make demo` does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from components.registry import mlflow_registry as reg
from flows.pipeline import pipeline_stages
from tests.conftest import BIN, KB, make_project, run_checked


def _run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return run_checked(args, cwd, env)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path, tiny_model: Path, prefect_api: str):  # noqa: ANN201
    root = tmp_path_factory.mktemp("project")
    env = make_project(root, tiny_corpus, tiny_model, prefect_api)
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
    assert tags["index_content_hash"] == indexes[0].tags["content_hash"]
    assert tags["corpus_version"] == "v2" and tags["adapter_method"] == "lora"
    assert tags["dvc.evaluate"] and tags["git_commit"] and tags["prefect_flow_run_id"]


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
