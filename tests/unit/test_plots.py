"""The evaluation's plots and the recall@k curve they draw (components/evaluation/plots.py)."""

from __future__ import annotations

import base64

import pytest

from components.evaluation.compare import recall_curve
from components.evaluation.gold import Gold
from components.evaluation.plots import write_evaluation_plots
from components.stores.base import Hit
from flows.pipeline import plots_markdown

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(*hits: tuple[str, str]) -> list[Hit]:
    return [Hit(chunk, 1.0, {"doc_id": doc}) for chunk, doc in hits]


def test_recall_curve_counts_the_first_gold_at_each_depth() -> None:
    rows = [
        _row(("a1", "a"), ("b1", "b"), ("c1", "c")),  # gold chunk first
        _row(("b1", "b"), ("c1", "c"), ("a2", "a")),  # gold chunk third, gold document third
        _row(("b1", "b"), ("c1", "c"), ("b2", "b")),  # gold document never; its chunk is not located
    ]
    test = [{"doc_id": "a"}, {"doc_id": "a"}, {"doc_id": "d"}]
    golds = [Gold("span", ("a1",)), Gold("overlap", ("a2",)), Gold("document", ("d1", "d2"))]
    curve = recall_curve(rows, test, golds, used_k=2)
    assert curve["k"] == [1, 2, 3] and curve["used_k"] == 2
    assert curve["chunk_questions"] == 2 and curve["doc_questions"] == 3
    assert curve["chunk"] == [0.5, 0.5, 1.0]
    assert curve["doc"] == pytest.approx([1 / 3, 1 / 3, 2 / 3])


def test_recall_curve_without_located_answers_has_no_chunk_level() -> None:
    curve = recall_curve([_row(("a1", "a"))], [{"doc_id": "a"}], [Gold("document", ("a1",))], used_k=1)
    assert curve["chunk"] is None and curve["doc"] == [1.0]


def _metrics() -> dict:
    systems = {
        "base": {"em": 0.0, "em_lo": 0.0, "em_hi": 0.0, "f1": 0.1, "f1_lo": 0.05, "f1_hi": 0.2},
        "rag": {"em": 0.1, "em_lo": 0.0, "em_hi": 0.2, "f1": 0.3, "f1_lo": 0.2, "f1_hi": 0.4},
        "adapter": {"em": 0.6, "em_lo": 0.4, "em_hi": 0.8, "f1": 0.7, "f1_lo": 0.6, "f1_hi": 0.8},
    }
    curve = {"k": [1, 2, 3], "used_k": 3, "chunk": [0.5, 0.7, 0.9], "chunk_questions": 4}
    curve |= {"doc": [0.8, 0.9, 1.0], "doc_questions": 5}
    return {"questions": 5, "corpus_version": "v2", "recall_curve": curve, **systems}


def test_plots_are_written_as_images_and_replace_the_old_ones(tmp_path) -> None:
    folder = tmp_path / "plots"
    folder.mkdir()
    (folder / "stale.png").write_bytes(b"old")
    rows = [
        {"gold": "ten mg", "base": "I do not know the answer", "rag": "It is ten", "adapter": "ten mg"}
    ] * 5
    written = write_evaluation_plots(_metrics(), rows, folder)
    assert sorted(p.name for p in written) == ["answer_lengths.png", "recall_at_k.png", "systems.png"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in written)
    for path in written:
        assert path.read_bytes().startswith(PNG_SIGNATURE) and path.stat().st_size > 5_000


def test_no_questions_leave_no_plots(tmp_path) -> None:
    folder = tmp_path / "plots"
    folder.mkdir()
    (folder / "systems.png").write_bytes(b"from an earlier run")
    assert write_evaluation_plots({"questions": 0}, [], folder) == []
    assert list(folder.iterdir()) == []


def test_the_prefect_artifact_inlines_each_plot(tmp_path) -> None:
    rows = [{"gold": "a", "base": "b c", "rag": "a", "adapter": "a"}] * 3
    written = write_evaluation_plots(_metrics(), rows, tmp_path)
    markdown = plots_markdown(tmp_path)
    assert markdown.count("](data:image/png;base64,") == len(written) == 3
    first = markdown.split("base64,", 1)[1].split(")", 1)[0]
    assert base64.b64decode(first).startswith(PNG_SIGNATURE)
    assert plots_markdown(tmp_path / "missing") == ""
