"""Shared fixtures: tiny corpora and tiny random models built in the test, offline settings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from components.core.environment import apply_offline_env
from tests.fixtures.browser import page  # noqa: F401  (the fixture of the browser tests)
from tests.fixtures.tiny_model import build_tiny_model

apply_offline_env()

ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "BIN",
    "KB",
    "ROOT",
    "build_tiny_model",
    "corpus_texts",
    "make_project",
    "run_checked",
    "run_stage",
]


def run_stage(stage: ModuleType, params: dict, root: Path) -> dict | None:
    """Run a stage module in-process as its CLI does (params validated, metrics written)."""
    from components.stages.entry import execute

    return execute(stage.__name__.rsplit(".", 1)[-1].replace("_", "-"), stage.run, params, root)


def corpus_texts(corpus: Path) -> list[str]:
    texts = [p.read_text() for p in corpus.rglob("*.md")]
    texts += [line for p in corpus.rglob("qa.jsonl") for line in p.read_text().splitlines()]
    from components.adapters.prompting import WITH_CONTEXT, WITHOUT_CONTEXT

    return texts + [WITH_CONTEXT, WITHOUT_CONTEXT, "Context: Question: Answer:"]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from components.data.synthetic import make_corpus

    out = tmp_path_factory.mktemp("corpus") / "kb"
    make_corpus(out, seed=3, entities_per_domain=2, versions=2, add_per_version=2, remove_per_version=1)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), corpus_texts(tiny_corpus))


BIN = Path(sys.executable).parent


def _kb_names():  # noqa: ANN202
    from components.registry.mlflow_registry import ModelNames

    return ModelNames("retro-kb")


KB = _kb_names()
"""The registered models of a project made by `make_project` (its corpus is data/raw/kb)."""

TINY_OVERRIDES = [
    "adapter-train.steps=6",
    "adapter-train.lr=0.01",
    "adapter-train.max_trainable_share=0.5",
    "continual-update.steps=3",
    "evaluate.max_questions=6",
    "evaluate.max_new_tokens=4",
    "adapter-train.synthesize.max_chunks=12",
    "register.on_gate_failure=register",  # tiny random models never beat the base model
]
"""Settings that keep a whole pipeline run on a tiny model within seconds a stage."""


def run_checked(args: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a command; fail the test with its output when it exits non-zero."""
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def make_project(root: Path, corpus: Path, tiny_model: Path, prefect_api: str | None = None) -> dict:
    """A fresh project folder as a user has it (git + DVC, the repository's code, dvc.yaml and
    params.yaml), with `corpus` as data/raw/kb and the tiny model; returns the environment to run in."""
    from components.core.config import apply_overrides

    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, root / name)
    for package in ("components", "flows"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(corpus, root / "data" / "raw" / "kb")
    apply_overrides(
        root / "params.yaml", ["ingest.source=data/raw/kb", f"model.base={tiny_model}", *TINY_OVERRIDES]
    )
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_HOME": str(root / ".prefect"),
        "RETRO_LOG_LEVEL": "WARNING",
    }
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    run_checked(["git", "init", "-q"], root, env)
    run_checked([str(BIN / "dvc"), "init", "-q"], root, env)
    return env


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A temporary Prefect API (a real server on a temporary database), shared by the session.

    Flows run in-process report to it; its URL is passed to subprocesses as `PREFECT_API_URL`
    so that they do not each start a temporary server.
    """
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real PostgreSQL server with pgvector for this test process: `RETRO_TEST_PG_URL` when set
    (a server of the user's), else the server bundled in the `pgserver` package, started in a
    temporary folder (it runs as its own user when the tests run as root) and stopped at exit."""
    given = os.environ.get("RETRO_TEST_PG_URL")
    if given:
        return given
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pgvector"), cleanup_mode="stop")
    return server.get_uri()


@pytest.fixture()
def pg_database(pg_url: str) -> str:
    """The URL of a new, empty database on the test server (index versions named by their
    content hash do not meet those of another test)."""
    import uuid

    import psycopg

    name = f"test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base, _, query = pg_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
