"""dvc.yaml declares what each stage really reads, so `dvc repro` reruns exactly what it must.

A tiny project runs the whole pipeline through `dvc repro` under strace (tests/e2e/
dependency_check.py); every file, folder, project module and params key a stage read must be
declared in its dvc.yaml entry. Then the three scenarios a user meets: a changed retrieval
setting, a changed store package, and a new corpus version that changes only the questions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components.core.config import apply_overrides
from tests.conftest import BIN, ROOT, make_project, run_checked
from tests.e2e.dependency_check import declared, observed_reads, strace_command, undeclared

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (.ci/run installs it)")

TRACE_SITE = ROOT / "tests" / "fixtures" / "trace"
UPSTREAM = {"ingest", "chunk", "embed", "index"}


def traced_repro(root: Path, env: dict, out: Path) -> tuple[dict, subprocess.CompletedProcess]:
    """`dvc repro` under strace; what each stage read."""
    out.mkdir(parents=True, exist_ok=True)
    traced_env = {
        **env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TRACE_SITE), env.get("PYTHONPATH")])),
        "RETRO_TRACE_DIR": str(out),
    }
    proc = run_checked([*strace_command(out / "strace.txt"), str(BIN / "dvc"), "repro"], root, traced_env)
    return observed_reads(out / "strace.txt", out, root, root / "dvc.yaml"), proc


def ran(proc: subprocess.CompletedProcess) -> set[str]:
    """The stages `dvc repro` ran (not skipped)."""
    return set(re.findall(r"Running stage '([\w-]+)'", proc.stdout + proc.stderr))


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path, tiny_model: Path):  # noqa: ANN201
    root = tmp_path_factory.mktemp("declared")
    env = make_project(root, tiny_corpus, tiny_model)
    reads, proc = traced_repro(root, env, tmp_path_factory.mktemp("trace"))
    assert len(ran(proc)) == 9, proc.stdout[-2000:]
    return root, env, reads


def test_every_stage_declares_what_it_reads(traced) -> None:  # noqa: ANN001
    root, _, reads = traced
    assert set(reads) == {
        "ingest",
        "chunk",
        "embed",
        "index",
        "synthesize",
        "adapter-train",
        "continual-update",
        "evaluate",
        "register",
    }
    for stage, seen in reads.items():  # the trace saw real work: inputs, code and params
        assert any(f.startswith("components/stages/") for f in seen.files), stage
        assert seen.params, stage
    assert "data/interim/chunks.parquet" in reads["index"].files and "retrieval.k" in reads["evaluate"].params
    assert undeclared(reads, declared(root / "dvc.lock")) == {}


def test_the_check_rejects_undeclared_reads(traced, tmp_path: Path) -> None:  # noqa: ANN001
    root, env, reads = traced
    declarations = declared(root / "dvc.lock")
    paths, keys = declarations["ingest"]
    declarations["ingest"] = (paths - {"components/data/validation.py"}, keys)
    paths, keys = declarations["index"]
    declarations["index"] = (paths, keys - {"retrieval.mode"})
    assert undeclared(reads, declarations) == {
        "ingest": ["file components/data/validation.py"],
        "index": ["param retrieval.mode"],
    }
    # the fixture stage reads a file its dvc.yaml entry does not name
    fixture = tmp_path / "undeclared"
    shutil.copytree(ROOT / "tests" / "fixtures" / "undeclared_read", fixture)
    run_checked(["git", "init", "-q"], fixture, env)
    run_checked([str(BIN / "dvc"), "init", "-q"], fixture, env)
    peek, _ = traced_repro(fixture, env, tmp_path / "trace")
    assert undeclared(peek, declared(fixture / "dvc.lock")) == {"peek": ["file secret.txt"]}


def test_retrieval_k_reruns_exactly_the_stages_that_read_it(traced) -> None:  # noqa: ANN001
    root, env, reads = traced
    readers = {stage for stage, seen in reads.items() if "retrieval.k" in seen.params}
    assert readers == {"index", "adapter-train", "continual-update", "evaluate"}  # index fits fusion for k
    apply_overrides(root / "params.yaml", ["retrieval.k=5"])
    changed = ran(run_checked([str(BIN / "dvc"), "repro"], root, env))
    # synthesize and register rerun because index and evaluate.json, which they read, changed;
    # nothing upstream of index reruns
    assert changed == readers | {"synthesize", "register"}
    assert ran(run_checked([str(BIN / "dvc"), "repro"], root, env)) == set()


def test_a_store_code_change_reruns_index_and_its_readers(traced) -> None:  # noqa: ANN001
    root, env, reads = traced
    opens_index = {s for s, seen in reads.items() if any(f.startswith("data/index") for f in seen.files)}
    assert {"adapter-train", "evaluate", "register"} <= opens_index
    with (root / "components" / "stores" / "base.py").open("a") as fh:
        fh.write("\n# a change under components/stores\n")
    changed = ran(run_checked([str(BIN / "dvc"), "repro"], root, env))
    assert {"index"} | opens_index <= changed and not changed & {"ingest", "chunk", "embed"}


def test_a_version_that_changes_only_questions_keeps_the_index(traced) -> None:  # noqa: ANN001
    root, env, _ = traced
    kb = root / "data" / "raw" / "kb"
    before = json.loads((root / "data" / "index" / "manifest.json").read_text())
    shutil.copytree(kb / "v2", kb / "v3")
    items = [json.loads(line) for line in (kb / "v3" / "qa.jsonl").read_text().splitlines()]
    items[0]["question"] = items[0]["question"].rstrip("?") + ", according to the documents?"
    (kb / "v3" / "qa.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    proc = run_checked([str(BIN / "dvc"), "repro"], root, env)
    assert "index" in ran(proc)  # its deps changed (new chunk table); it finds nothing to do
    metrics = json.loads((root / "data" / "metrics" / "index.json").read_text())
    assert metrics["index_version"] == before["index_version"]
    assert metrics["content_hash"] == before["content_hash"] and metrics["corpus_version"] == "v2"
    assert ran(run_checked([str(BIN / "dvc"), "repro"], root, env)) == set()
