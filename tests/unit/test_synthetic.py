import json
from pathlib import Path

import pytest

from components.data.synthetic import make_corpus


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _qa(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_seed_same_corpus_other_seed_other_corpus(tmp_path: Path) -> None:
    make_corpus(tmp_path / "a", seed=5, entities_per_domain=2)
    make_corpus(tmp_path / "b", seed=5, entities_per_domain=2)
    make_corpus(tmp_path / "c", seed=6, entities_per_domain=2)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_every_answer_is_stated_in_its_document(tmp_path: Path) -> None:
    make_corpus(tmp_path / "kb", seed=1, entities_per_domain=3)
    items = _qa(tmp_path / "kb" / "qa.jsonl")
    assert {i["split"] for i in items} == {"train", "test"}
    domains = {i["doc_id"].split("/")[0] for i in items}
    assert domains == {"medicine", "law", "finance", "science", "enterprise"}
    for item in items:
        assert set(item) >= {"id", "question", "answer", "doc_id", "split"}
        doc = (tmp_path / "kb" / "docs" / f"{item['doc_id']}.md").read_text()
        assert item["answer"] in doc
        assert item["answer"] not in item["question"]


def test_versions_change_add_and_remove_documents(tmp_path: Path) -> None:
    summary = make_corpus(
        tmp_path / "kb",
        seed=2,
        entities_per_domain=4,
        versions=2,
        change_share=0.25,
        add_per_version=3,
        remove_per_version=2,
    )
    v1 = {i["id"]: i for i in _qa(tmp_path / "kb" / "v1" / "qa.jsonl")}
    v2 = {i["id"]: i for i in _qa(tmp_path / "kb" / "v2" / "qa.jsonl")}
    docs1 = {p.stem for p in (tmp_path / "kb" / "v1" / "docs").rglob("*.md")}
    docs2 = {p.stem for p in (tmp_path / "kb" / "v2" / "docs").rglob("*.md")}
    assert len(docs1 - docs2) == 2 and len(docs2 - docs1) == 3
    changed = [q for q in v1 if q in v2 and v1[q]["answer"] != v2[q]["answer"]]
    assert summary["changed_facts"] == round(0.25 * 4 * 5 * 4)
    assert len(changed) >= 1
    # a question keeps its split across versions, so the test split never leaks into training
    assert all(v1[q]["split"] == v2[q]["split"] for q in v1 if q in v2)


def test_task_sequence_adds_entities_of_rotating_domains(tmp_path: Path) -> None:
    summary = make_corpus(tmp_path / "seq", seed=0, tasks=6, entities_per_task=2)
    folders = sorted(p.name for p in (tmp_path / "seq").iterdir())
    assert folders == [f"t{i:03d}" for i in range(1, 7)]
    counts = [len(list((tmp_path / "seq" / f / "docs").rglob("*.md"))) for f in folders]
    assert counts == [2, 4, 6, 8, 10, 12]
    assert summary["changed_facts"] == 2 * 5


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    make_corpus(tmp_path / "kb", seed=0, entities_per_domain=1)
    with pytest.raises(FileExistsError):
        make_corpus(tmp_path / "kb", seed=0, entities_per_domain=1)
