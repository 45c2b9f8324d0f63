"""A corpus shaped like real documents, through `dvc repro` as a user runs it.

tests/fixtures/realistic_corpus has section headings, repeated lines that become identical
windows, documents of several chunks, extractive answers, paraphrased answers and yes/no answers.
The run uses the data-derived budgets (epochs with early stopping, the answer-length cap).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from components.evaluation.budget import answer_token_budget
from tests.conftest import BIN, ROOT, make_project, run_checked

CORPUS = ROOT / "tests" / "fixtures" / "realistic_corpus"
OVERRIDES = [
    "chunk.max_tokens=32",  # small windows: several chunks a document, repeated lines as windows
    "chunk.overlap=4",
    "adapter-train.synthesize.mode=off",  # its twelve human questions only: the counts below
    "adapter-train.steps=null",  # the budget from the data: epochs over the train questions
    "adapter-train.epochs=2",
    "adapter-train.validation_share=0.34",
    "evaluate.max_new_tokens=null",  # the answer-length cap from the train answers
    "evaluate.max_questions=0",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    from components.core.config import apply_overrides

    root = tmp_path_factory.mktemp("realistic")
    env = make_project(root, CORPUS, tiny_model)
    apply_overrides(root / "params.yaml", OVERRIDES)
    run_checked([str(BIN / "dvc"), "repro"], root, env)
    return root


def _metrics(root: Path, name: str) -> dict:
    return json.loads((root / "data" / "metrics" / f"{name}.json").read_text())


def test_repeated_windows_get_distinct_ids_and_chunks_keep_their_section(project: Path) -> None:
    chunk = _metrics(project, "chunk")
    assert chunk["repeated_windows"] >= 1 and chunk["unique_chunks"] == chunk["chunks"]
    chunks = pd.read_parquet(project / "data" / "interim" / "chunks.parquet")
    assert chunks.groupby("doc_id").size().min() >= 3  # every document spans several chunks
    assert "Inspection guideline for steel railway bridges > Fatigue cracks" in set(
        chunks.loc[chunks["doc_id"] == "bridge-inspection", "section"]
    )
    assert _metrics(project, "index")["count"] == len(chunks)  # indexed without a duplicate-id error


def test_training_length_comes_from_epochs_with_a_validation_split(project: Path) -> None:
    train = _metrics(project, "train")
    assert train["steps_source"].startswith("2 epochs")
    assert train["validation_examples"] == 4 and train["train_examples"] == 8
    assert train["planned_steps"] == 4  # 2 epochs x 8 examples / batch 4
    assert len(train["validation_losses"]) >= 1 and train["best_step"] >= 1


def test_evaluation_reports_gold_kinds_recall_levels_and_intervals(project: Path, tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    metrics = _metrics(project, "evaluate")
    # test split: 3 spans, 1 paraphrase located by overlap, 2 yes/no answers (the whole document)
    assert metrics["gold"] == {"span": 3, "overlap": 1, "document": 2}
    assert metrics["chunk_questions"] == 4 and metrics["questions"] == 6
    for key in ("chunk_recall@3", "chunk_mrr", "doc_recall@3", "doc_mrr"):
        assert 0.0 <= metrics[key] <= 1.0, key
    for system in ("base", "rag", "adapter"):
        figures = metrics[system]
        assert figures["f1_lo"] <= figures["f1"] <= figures["f1_hi"], system
        assert figures["em_lo"] <= figures["em"] <= figures["em_hi"], system
    assert metrics["base"]["support"] is None and 0.0 <= metrics["rag"]["support"] <= 1.0
    gain = metrics["adapter_minus_rag"]
    assert gain["f1"] == pytest.approx(metrics["adapter"]["f1"] - metrics["rag"]["f1"])
    assert gain["f1_lo"] <= gain["f1"] <= gain["f1_hi"]
    qa = [json.loads(line) for line in (CORPUS / "qa.jsonl").read_text().splitlines()]
    answers = [q["answer"] for q in qa if q["split"] == "train"]
    expected = answer_token_budget(AutoTokenizer.from_pretrained(str(tiny_model)), answers, 95)
    assert metrics["max_new_tokens"] == expected
    assert metrics["max_new_tokens_source"] == "p95 of train answers"
    table = (project / "data" / "metrics" / "evaluate.md").read_text()
    assert "Adapter minus RAG, paired" in table and "chunk recall@3" in table
