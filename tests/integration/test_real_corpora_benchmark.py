"""benchmarks/real_corpora.py on the realistic test corpus with the tiny model, so it cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.real_corpora import label_accuracy, main
from tests.conftest import ROOT, TINY_OVERRIDES

CORPUS = ROOT / "tests" / "fixtures" / "realistic_corpus"


def test_the_benchmark_scores_five_systems_with_intervals(tmp_path: Path, tiny_model: Path) -> None:
    overrides = [*TINY_OVERRIDES, f"model.base={tiny_model}", "chunk.max_tokens=32"]
    overrides.append("evaluate.max_questions=0")
    work, out = str(tmp_path / "work"), str(tmp_path / "out.json")
    args = ["--corpus", f"tiny={CORPUS}", "--work", work, "--out", out]
    for override in overrides:
        args += ["-S", override]
    [report] = main(args)
    assert [r["system"] for r in report["rows"]] == [
        "base (no retrieval)",
        "base + retrieval (RAG)",
        "closed-book LoRA",
        "adapter + retrieval",
        "full fine-tuning + passages",
    ]
    assert report["questions"] == 6 and report["gold"] == {"span": 3, "overlap": 1, "document": 2}
    for row in report["rows"]:
        assert row["main_lo"] <= row["main"] <= row["main_hi"], row["system"]
    rag = report["rows"][1]
    assert rag["vs_rag"] == {"gain": 0.0, "gain_lo": 0.0, "gain_hi": 0.0}  # RAG against itself
    assert report["rows"][0]["support"] is None and report["rows"][2]["chunk_recall@k"] is None
    assert report["training"]["steps"] == 6  # adapter-train.steps; the trained rows take as many
    assert json.loads((tmp_path / "out.json").read_text()) == [report]
    # the training corpus stays untouched: the benchmark works on a copy
    assert not (CORPUS / "data").exists()


def test_label_answers_score_the_first_label_word() -> None:
    assert label_accuracy("Yes, the study shows it.", "yes") == 1.0
    assert label_accuracy("The answer is no", "yes") == 0.0
    assert label_accuracy("unclear", "maybe") == 0.0
