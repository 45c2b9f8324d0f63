"""Updates as deltas (components/data/delta.py): the next snapshot from the previous one, a folder
of what changed and the ids to remove; a flat corpus turned into v1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.data.corpus import list_versions, read_ids
from components.data.delta import build_snapshot, document_ids, make_versioned


def _write(folder: Path, docs: dict[str, str], questions: list[dict]) -> Path:
    for doc_id, text in docs.items():
        path = folder / "docs" / f"{doc_id}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if questions:
        (folder / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    return folder


def _q(doc_id: str, answer: str, split: str = "train") -> dict:
    return {
        "id": f"{doc_id}#q",
        "question": f"What of {doc_id}?",
        "answer": answer,
        "doc_id": doc_id,
        "split": split,
    }


@pytest.fixture()
def previous(tmp_path: Path) -> Path:
    docs = {f"law/d{i}": f"Document {i} says A{i}." for i in range(6)}
    docs["law/notes"] = "Notes."
    (tmp_path / "v1" / "docs").mkdir(parents=True)
    (tmp_path / "v1" / "docs" / "extra.jsonl").write_text(
        json.dumps({"id": "j1", "text": "Record one."})
        + "\n"
        + json.dumps({"id": "j2", "text": "Record two."})
        + "\n"
    )
    return _write(tmp_path / "v1", docs, [_q(f"law/d{i}", f"A{i}") for i in range(6)] + [_q("j1", "one")])


def test_a_delta_revises_adds_and_removes_and_carries_the_rest(previous: Path, tmp_path: Path) -> None:
    revised = {"law/d0": "Document 0 says B0.", "law/d1": "Document 1 says B1."}
    added = {f"law/new{i}": f"New document {i} says N{i}." for i in range(3)}
    delta = _write(
        tmp_path / "delta",
        revised | added,
        [_q("law/d0", "B0"), _q("law/d1", "B1")] + [_q(f"law/new{i}", f"N{i}", "test") for i in range(3)],
    )
    summary = build_snapshot(previous, delta, {"law/d5", "j2"}, tmp_path / "v2")
    ids = document_ids(tmp_path / "v2" / "docs")
    assert set(ids) == {f"law/d{i}" for i in range(5)} | set(added) | {"law/notes", "j1"}
    assert (tmp_path / "v2" / "docs" / "law" / "d0.md").read_text() == "Document 0 says B0."
    assert (tmp_path / "v2" / "docs" / "law" / "d2.md").read_text() == "Document 2 says A2."  # carried
    assert [json.loads(x)["id"] for x in (tmp_path / "v2/docs/extra.jsonl").read_text().splitlines()] == [
        "j1"
    ]
    questions = {q["id"]: q for q in map(json.loads, (tmp_path / "v2" / "qa.jsonl").read_text().splitlines())}
    assert questions["law/d0#q"]["answer"] == "B0" and questions["law/d2#q"]["answer"] == "A2"
    assert "law/d5#q" not in questions and "law/new2#q" in questions and "j1#q" in questions
    assert summary.documents_added == sorted(added) and summary.documents_changed == ["law/d0", "law/d1"]
    assert summary.documents_removed == ["j2", "law/d5"] and summary.documents_carried == 5
    assert (summary.questions_new, summary.questions_revised, summary.questions_removed) == (3, 2, 1)
    assert summary.questions_unchanged == 4  # d2, d3, d4, j1


def test_bad_removals_are_refused_and_removal_files_allow_comments(previous: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"does not hold: \['law/typo'\]"):
        build_snapshot(previous, None, {"law/typo"}, tmp_path / "v2")
    delta = _write(tmp_path / "delta", {"law/d1": "changed"}, [])
    with pytest.raises(ValueError, match="both removed and sent"):
        build_snapshot(previous, delta, {"law/d1"}, tmp_path / "v2b")
    ids = tmp_path / "ids.txt"
    ids.write_text("# taken out on request\nlaw/d3\n\nlaw/d4\n")
    assert read_ids(ids) == {"law/d3", "law/d4"}
    only_removed = build_snapshot(previous, None, read_ids(ids), tmp_path / "v2c")
    assert only_removed.documents_carried == 7 and only_removed.questions_removed == 2


def test_a_flat_corpus_becomes_v1_once(tmp_path: Path) -> None:
    flat = _write(tmp_path / "kb", {"a": "Alpha text."}, [_q("a", "alpha")])
    assert list_versions(flat) == [("v1", flat)]
    assert make_versioned(flat)
    assert list_versions(flat) == [("v1", flat / "v1")]
    assert (flat / "v1" / "qa.jsonl").exists() and not (flat / "docs").exists()
    assert not make_versioned(flat)
