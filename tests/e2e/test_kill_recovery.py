"""Crash safety, tested by killing: SIGKILL inside each stage of `retro pipeline`, then recovery.

A first run registers a pair and a person promotes it to champion. Then a document of the newest
corpus version and the learning rate change, so every stage has new work, and `retro pipeline`
runs again and again, each time with `RETRO_KILL_AT` killing one stage (the next in the pipeline)
at a point inside it: several after outputs have begun landing, the folder swaps between their
two renames, register between its index and adapter versions. Each run must fail, finish the
stage killed the time before, and leave the registry as it was; the last run, without a kill,
completes and registers one whole new pair.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from components.core.config import apply_overrides
from components.core.drills import KILL_ENV
from components.registry import mlflow_registry as reg
from components.registry.publish import adapter_hash
from flows.pipeline import project_paths
from tests.conftest import BIN, KB, make_project, run_checked

pytestmark = pytest.mark.slow

KILLS = [  # (stage, point): one per stage, in pipeline order
    ("ingest", "write"),  # the documents table landed, the questions not yet
    ("chunk", "start"),
    ("embed", "write"),  # the embeddings table landed, the metrics not yet
    ("index", "swap"),  # the old index moved aside, the new one not in its place
    ("synthesize", "write"),
    ("adapter-train", "swap"),
    ("continual-update", "swap"),
    ("evaluate", "write"),  # the predictions landed, the table and metrics not yet
    ("register", "registered-index"),  # the index version registered, the adapter version not
]
FOLDER_OUTPUTS = {"index": "index", "adapter-train": "base_adapter", "continual-update": "current_adapter"}


def _client(root: Path):  # noqa: ANN202
    return reg.configure(f"sqlite:///{root}/mlruns/mlflow.db")


def registry_state(root: Path) -> dict[str, list]:
    """Every version of the lineage's models with its tags and aliases."""
    client = _client(root)
    state = {}
    for model in client.search_registered_models(f"name LIKE '{KB.name}-%'"):
        found = client.search_model_versions(f"name = '{model.name}'")
        versions = [client.get_model_version(model.name, v.version) for v in found]  # with aliases
        state[model.name] = sorted((int(v.version), sorted(v.aliases), v.tags) for v in versions)
    return state


def _pipeline(root: Path, env: dict, kill: str | None = None) -> subprocess.CompletedProcess:
    env = {**env, KILL_ENV: kill} if kill else env
    return subprocess.run([str(BIN / "retro"), "pipeline"], cwd=root, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path, tiny_model: Path, prefect_api: str):  # noqa: ANN201
    root = tmp_path_factory.mktemp("kill-project")
    env = make_project(root, tiny_corpus, tiny_model, prefect_api)
    run_checked([str(BIN / "retro"), "pipeline"], root, env)
    client = _client(root)
    client.set_registered_model_alias(KB.adapter, "champion", "1")  # as a person promotes in the UI
    doc = sorted((root / "data/raw/kb/v2/docs").rglob("*.md"))[0]
    doc.write_text(doc.read_text() + "\n\nThe archive was moved to the Qorvath reading room in spring.\n")
    apply_overrides(root / "params.yaml", ["adapter-train.lr=0.02"])  # the first adapter is trained again
    return root, env


def test_a_kill_inside_each_stage_leaves_the_registry_and_the_next_run_recovers(project) -> None:  # noqa: ANN001
    root, env = project
    before = registry_state(root)
    assert [v for v, aliases, _ in before[KB.adapter] if "champion" in aliases] == [1]
    previous, rows = None, ["| stage | point | run | registry | seconds |", "|---|---|---|---|---|"]
    for stage, point in KILLS:
        started = time.time()
        killed = _pipeline(root, env, f"{stage}:{point}")
        log = killed.stdout + killed.stderr
        assert killed.returncode != 0, f"{stage}:{point} was not killed:\n{log[-3000:]}"
        assert f"stage {stage} failed" in log, log[-3000:]
        assert registry_state(root) == before, f"the registry changed after a kill in {stage}"
        if previous is not None:  # the stage killed last time finished in this run
            assert f"stage {previous} failed" not in log
            assert project_paths(root).metrics_of(previous).stat().st_mtime >= started
        if stage in FOLDER_OUTPUTS:  # the previous version is back in place, not half of the new one
            assert getattr(project_paths(root), FOLDER_OUTPUTS[stage]).is_dir()
        if stage == "register":
            assert f"deleted {KB.index} v2" in log, log[-3000:]
        previous = stage
        rows.append(f"| {stage} | {point} | killed (-9) | unchanged | {time.time() - started:.0f} s |")

    started = time.time()
    done = _pipeline(root, env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    print("\n".join([*rows, f"| (none) | | completed | one new pair | {time.time() - started:.0f} s |"]))
    status = run_checked([str(BIN / "dvc"), "status"], root, env).stdout
    # the candidate is refused (a tiny model does not beat the champion), so register puts the
    # champion's chain back in continual-update's folder: only that stage and evaluate are pending
    assert not [stage for stage, _ in KILLS[:6] if f"{stage}:" in status], status
    after = registry_state(root)
    new_adapters = [v for v in after[KB.adapter] if v not in before[KB.adapter]]
    new_indexes = [v for v in after[KB.index] if v not in before[KB.index]]
    assert len(new_adapters) == 1 and len(new_indexes) == 1  # one whole pair, no half one left
    assert new_adapters[0][2]["index_version"] == str(new_indexes[0][0]) == "3"  # v2 was deleted
    champion = [v for v, aliases, _ in after[KB.adapter] if "champion" in aliases]
    assert champion == [1]
    client = _client(root)
    version = client.get_model_version(KB.adapter, str(new_adapters[0][0]))
    pair = reg.download_adapter_version(client, version, names=KB)
    assert adapter_hash(pair.adapter_dir) == new_adapters[0][2]["adapter_hash"]  # nothing partial
    killed_runs = client.search_runs(
        [client.get_experiment_by_name(reg.EXPERIMENT).experiment_id], "attributes.status = 'KILLED'"
    )
    assert len(killed_runs) == 1  # the killed register's run, marked as such
