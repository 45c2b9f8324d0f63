"""Deployments on real servers: `retro services up` starts a Prefect server, an MLflow server and a
process worker on loopback; `prefect deploy --all` reads prefect.yaml; runs go through
`prefect deployment run`. Tiny random generator, packaged MiniLM, tiny synthetic corpus.

The tests run in file order on one project: full build, a knowledge update, a rehearsed stage
failure, then the watcher triggering the on-change deployment.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from serving_helpers import free_port

from components.core.config import apply_overrides
from components.registry import mlflow_registry as reg
from tests.conftest import KB, ROOT
from tests.fixtures.browser import check_evaluation_artifact

pytestmark = pytest.mark.slow  # real servers and two whole pipeline runs: `make test-slow`

BIN = Path(sys.executable).parent
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _run(
    args: list[str], cwd: Path, env: dict, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def _wait_until(condition: Callable[[], bool], timeout: float = 120) -> None:
    """Poll `condition` once a second until it holds or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        time.sleep(1)


class Stack:
    """The project folder, its environment and handles on the two servers' APIs."""

    def __init__(self, root: Path, env: dict, prefect_port: int, mlflow_port: int, corpus: Path) -> None:
        self.root, self.env, self.corpus = root, env, corpus
        self.api = f"http://127.0.0.1:{prefect_port}/api"
        self.mlflow = f"http://127.0.0.1:{mlflow_port}"

    def post(self, path: str, body: dict) -> list | dict:
        response = httpx.post(f"{self.api}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def flow_runs(self, deployment: str) -> list[dict]:
        flow, name = deployment.split("/")
        found = httpx.get(f"{self.api}/deployments/name/{flow}/{name}", timeout=30).json()
        return self.post("/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [found["id"]]}}})

    def state(self, run_id: str) -> str:
        """The flow run's state type: SCHEDULED, RUNNING, COMPLETED..."""
        return httpx.get(f"{self.api}/flow_runs/{run_id}", timeout=30).json()["state"]["type"]

    def artifacts(self, key: str) -> list[dict]:
        return self.post("/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC"})

    def deployment_run(
        self, name: str, *extra: str, check: bool = True
    ) -> tuple[str, subprocess.CompletedProcess]:
        """`prefect deployment run <name> --watch`; (flow run id, the finished command)."""
        args = [str(BIN / "prefect"), "deployment", "run", name, "--watch", "--watch-timeout", "900", *extra]
        proc = _run(args, self.root, self.env, check=check, timeout=1000)
        run_id = next(line.split("UUID:")[1].strip() for line in proc.stdout.splitlines() if "UUID:" in line)
        return run_id, proc

    def registry(self):  # noqa: ANN201
        return reg.configure(self.mlflow)

    def adapters(self) -> list:
        versions = self.registry().search_model_versions(f"name = '{KB.adapter}'")
        return sorted(versions, key=lambda v: int(v.version))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path, tiny_model: Path):  # noqa: ANN201
    root = tmp_path_factory.mktemp("deployed")
    for name in ("dvc.yaml", "params.yaml", "prefect.yaml"):
        shutil.copy(ROOT / name, root / name)
    for package in ("components", "flows"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(tiny_corpus / "v1", root / "data" / "raw" / "kb" / "v1")
    prefect_port, mlflow_port = free_port(), free_port()
    apply_overrides(
        root / "params.yaml",
        [
            "ingest.source=data/raw/kb",
            f"model.base={tiny_model}",
            "adapter-train.steps=4",
            "adapter-train.lr=0.01",
            "adapter-train.max_trainable_share=0.5",
            "continual-update.steps=2",
            "evaluate.max_questions=4",
            "evaluate.max_new_tokens=3",
            f"register.tracking_uri=http://127.0.0.1:{mlflow_port}",
            "register.on_gate_failure=register",  # tiny random models never beat the base model
            "watch.debounce_seconds=4",
            "watch.tick_seconds=0.5",
        ],
    )
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_HOME": str(root / ".prefect-client"),
        "RETRO_LOG_LEVEL": "WARNING",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    _run(["git", "init", "-q"], root, env)
    _run([str(BIN / "dvc"), "init", "-q"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-q", "-m", "project"], root, env)
    services = [str(BIN / "retro"), "services"]
    ports = [
        "--home",
        str(root / ".services"),
        "--prefect-port",
        str(prefect_port),
        "--mlflow-port",
        str(mlflow_port),
    ]
    try:
        _run([*services, "up", "prefect", "mlflow", "worker", *ports], root, env, timeout=600)
        _run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], root, env, timeout=300)
        yield Stack(root, env, prefect_port, mlflow_port, tiny_corpus)
    finally:
        _run([*services, "down", "--home", str(root / ".services")], root, env, check=False)


def test_services_are_healthy_and_deployments_come_from_prefect_yaml(stack: Stack) -> None:
    names = {f"{d['name']}" for d in stack.post("/deployments/filter", {})}
    assert names == {"full-build", "nightly", "on-change"}
    nightly = httpx.get(f"{stack.api}/deployments/name/knowledge-update/nightly", timeout=30).json()
    assert nightly["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
    assert nightly["work_pool_name"] == "retro-process"
    pool = httpx.get(f"{stack.api}/work_pools/retro-process", timeout=30).json()
    assert pool["type"] == "process" and pool["concurrency_limit"] == 1
    automations = stack.post("/automations/filter", {})
    assert any(a["trigger"].get("expect") == ["retro.corpus.changed"] for a in automations)
    assert httpx.get(f"{stack.mlflow}/health", timeout=10).text.strip() == "OK"


def test_full_build_then_knowledge_update_register_linked_pairs(stack: Stack, page) -> None:  # noqa: ANN001
    build_id, _ = stack.deployment_run("retro-pipeline/full-build")
    assert stack.state(build_id) == "COMPLETED"
    check_evaluation_artifact(page, stack.api.removesuffix("/api"))  # what a person sees in the UI
    first = stack.adapters()
    assert len(first) == 1 and first[0].tags["corpus_version"] == "v1"
    client = stack.registry()
    client.set_registered_model_alias(KB.adapter, "champion", first[0].version)  # a person promotes

    shutil.copytree(stack.corpus / "v2", stack.root / "data" / "incoming")
    update_id, _ = stack.deployment_run("knowledge-update/nightly")
    assert stack.state(update_id) == "COMPLETED"
    adapters = stack.adapters()
    assert len(adapters) == 2
    newest = adapters[-1].tags
    assert newest["corpus_version"] == "v2" and (stack.root / "data/raw/kb/v2/docs").is_dir()
    index = client.get_model_version(KB.index, newest["index_version"])
    assert index.tags["parent_version"] == first[0].tags["index_version"]
    assert index.tags["update_mode"] == "incremental"
    # lineage, on the version's run: the deployment's flow run, the git commit and the dvc.lock hashes
    lineage = client.get_run(adapters[-1].run_id).data.tags
    assert lineage["prefect_root_flow_run_id"] == update_id
    head = _run(["git", "rev-parse", "HEAD"], stack.root, stack.env).stdout.strip()
    assert lineage["git_commit"] == head
    lock = yaml.safe_load((stack.root / "dvc.lock").read_text())["stages"]
    for stage in ("index", "continual-update", "evaluate"):
        md5s = "".join(sorted(out["md5"] for out in lock[stage]["outs"]))
        assert lineage[f"dvc.{stage}"] == hashlib.sha256(md5s.encode()).hexdigest()[:16]
    shown = json.loads(
        _run([str(BIN / "retro"), "lineage", "--alias", "champion"], stack.root, stack.env).stdout
    )
    assert shown["adapter_version"] == str(first[0].version) and shown["prefect_flow_run_id"] == build_id
    assert shown["prefect_flow_run_url"].endswith(f"/runs/flow-run/{build_id}")
    assert shown["index"]["corpus_version"] == "v1"


class Hook(BaseHTTPRequestHandler):
    """A webhook receiver: keeps every JSON body posted to it."""

    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def test_failed_stage_leaves_champion_registry_and_workspace_intact(stack: Stack) -> None:
    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    _run([str(BIN / "retro"), "alert-on-failure", url], stack.root, stack.env)
    client = stack.registry()
    champion = client.get_model_version_by_alias(KB.adapter, "champion").version
    before = len(stack.adapters())
    extra = stack.root / "data" / "incoming" / "docs" / "late-addition.md"
    extra.write_text("# Late addition\n\nThe Quellmar relay was commissioned in 2031 by Varnis Works.\n")
    run_id, proc = stack.deployment_run(
        "knowledge-update/nightly", "--job-variable", 'env={"RETRO_FAIL_STAGE": "chunk"}', check=False
    )
    assert proc.returncode != 0
    assert stack.state(run_id) == "FAILED"
    assert client.get_model_version_by_alias(KB.adapter, "champion").version == champion
    assert len(stack.adapters()) == before
    report = stack.artifacts("retro-failure")[0]
    assert "chunk failed" in report["data"] and "failure rehearsal" in report["data"]
    # DVC removed chunk's output before the failed run; the flow put the last good version back
    lock = yaml.safe_load((stack.root / "dvc.lock").read_text())
    recorded = lock["stages"]["chunk"]["outs"][0]
    chunks = stack.root / recorded["path"]
    assert hashlib.md5(chunks.read_bytes()).hexdigest() == recorded["md5"]  # noqa: S324 - DVC's hash
    # the automation created by `retro alert-on-failure` notified the webhook
    _wait_until(lambda: bool(Hook.received))
    hook.shutdown()
    assert Hook.received and "Failed" in Hook.received[0]["subject"], Hook.received
    assert "nightly" in Hook.received[0]["subject"] and run_id in Hook.received[0]["text"]


def test_new_documents_in_the_watched_folder_start_exactly_one_run(stack: Stack) -> None:
    runs_before = len(stack.flow_runs("knowledge-update/on-change"))
    watcher = subprocess.Popen(
        [str(BIN / "retro"), "watch"],
        cwd=stack.root,
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(6)  # the incoming folder matches the newest corpus version: nothing to announce
        assert len(stack.flow_runs("knowledge-update/on-change")) == runs_before
        docs = stack.root / "data" / "incoming" / "docs"
        for i in range(6):  # a burst of new documents, as a sync tool would write them
            (docs / f"burst-{i}.md").write_text(
                f"# Burst {i}\n\nThe Ostrel beacon {i} stands at pier {i + 40}.\n"
            )
            time.sleep(0.4)
        _wait_until(lambda: len(stack.flow_runs("knowledge-update/on-change")) != runs_before)
        time.sleep(10)  # more than twice the debounce time: a second announcement would show by now
        runs = stack.flow_runs("knowledge-update/on-change")
        assert len(runs) == runs_before + 1
        assert runs[0]["parameters"]["corpus"] == str((stack.root / "data" / "incoming").resolve())
        # the worker picks the run up; the nightly test already shows this flow completing on this
        # folder, so the run is cancelled here rather than waited for
        run_id = runs[0]["id"]
        _wait_until(lambda: stack.state(run_id) not in {"SCHEDULED", "PENDING"})
        state = stack.state(run_id)
        assert state in {"RUNNING", "COMPLETED"}, state
        if state == "RUNNING":
            stack.post(f"/flow_runs/{run_id}/set_state", {"state": {"type": "CANCELLING"}, "force": True})
        _wait_until(lambda: stack.state(run_id) in FINAL)
        assert stack.state(run_id) in {"CANCELLED", "COMPLETED"}
    finally:
        watcher.terminate()
        output = watcher.communicate(timeout=30)[0]
    assert output.count("announced") == 1, output
