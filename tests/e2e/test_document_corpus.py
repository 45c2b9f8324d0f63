"""A folder of PDFs, a DOCX and HTML with no questions, through `retro pipeline` as a user runs it:
readers, quarantine, synthesized questions, evaluation on the synthetic test split, registration
tagged with it, and `retro ask` citing pages."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from components.data.readers import ocr_available
from components.registry import mlflow_registry as reg
from tests.conftest import BIN, make_project, run_checked
from tests.fixtures.documents import MALFORMED, write_document_corpus


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, prefect_api: str):  # noqa: ANN201
    corpus = write_document_corpus(tmp_path_factory.mktemp("documents"))
    root = tmp_path_factory.mktemp("documents-project")
    env = make_project(root, corpus, tiny_model, prefect_api)
    short_chunks = ["-S", "chunk.max_tokens=32", "-S", "chunk.overlap=4"]  # several a page
    run_checked([str(BIN / "retro"), "pipeline", *short_chunks], root, env)
    return root, env


def metrics(root: Path, name: str) -> dict:
    return json.loads((root / "data" / "metrics" / f"{name}.json").read_text())


def test_every_format_is_read_and_every_malformed_file_quarantined(project) -> None:  # noqa: ANN001
    root, _ = project
    quarantined = [json.loads(line) for line in (root / "data" / "quarantine.jsonl").read_text().splitlines()]
    reasons = {Path(q["source"]).name: q["reason"] for q in quarantined}
    assert all(reason in reasons[name] for name, reason in MALFORMED.items()), reasons
    ingest = metrics(root, "ingest")
    assert ingest["documents"] == 3 + ocr_available()
    assert {".pdf", ".docx", ".html"} <= set(ingest["formats"])
    chunks = pd.read_parquet(root / "data" / "interim" / "chunks.parquet")
    guideline = chunks[chunks["doc_id"] == "guideline"]
    assert set(guideline["page"]) == {1, 2, 3} and set(guideline["source"]) == {"guideline.pdf"}
    assert "Dosage table" in set(guideline["section"])


def test_questions_are_synthesized_and_scored_on_held_out_documents(project) -> None:  # noqa: ANN001
    root, _ = project
    synthesized = metrics(root, "synthesize")
    assert synthesized["synthesized_versions"] == ["v1"] and synthesized["human_questions"] == 0
    assert synthesized["synthetic_train"] > 0 and synthesized["synthetic_test"] > 0
    questions = pd.read_parquet(root / "data" / "interim" / "questions.parquet")
    test_docs = set(questions.loc[questions["split"] == "test", "doc_id"])
    train_docs = set(questions.loc[questions["split"] == "train", "doc_id"])
    assert test_docs and not test_docs & train_docs  # no test document is trained on
    evaluated = metrics(root, "evaluate")
    assert evaluated["eval_questions"] == "synthetic" and evaluated["questions"] > 0
    predictions = [json.loads(line) for line in (root / "data" / "metrics" / "predictions.jsonl").open()]
    assert all(p["citations"] and p["citations"][0]["doc_id"] for p in predictions)


def test_the_registered_version_says_its_questions_were_synthetic_and_answers_cite_pages(  # noqa: ANN201
    project,  # noqa: ANN001
) -> None:
    root, env = project
    client = reg.configure(f"sqlite:///{root}/mlruns/mlflow.db")
    version = client.get_model_version("retro-kb-adapter", "1")
    assert version.tags["eval_questions"] == "synthetic"
    client.set_registered_model_alias("retro-kb-adapter", "champion", "1")  # a person promotes it
    question = "What is the maximum daily dose of velorane?"
    asked = run_checked([str(BIN / "retro"), "ask", question, "--k", "5"], root, env)
    assert "guideline p.1 § Velorane guideline [" in asked.stdout, asked.stdout
