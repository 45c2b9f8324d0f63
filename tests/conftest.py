"""Shared fixtures: tiny corpora and tiny random models built in the test, offline settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.adapters.tiny import build_tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["ROOT", "build_tiny_model", "corpus_texts"]


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
