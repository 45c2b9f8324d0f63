"""An update sent as a delta, through the real stages: a flat corpus becomes v1, the delta (2
revised facts, 3 new documents, 1 removed) becomes a full v2 snapshot, the replay reservoir is
kept and evaluation reports the new, the revised and the unchanged questions apart."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from components.core.config import load_params_file, set_dotted
from components.core.paths import Paths
from components.data.synthetic import make_corpus
from components.stages import (
    adapter_train,
    chunk,
    continual_update,
    embed,
    evaluate,
    index,
    ingest,
    synthesize,
)
from flows.knowledge_update import add_delta
from tests.conftest import ROOT, build_tiny_model, corpus_texts, run_stage

STAGES = (ingest, chunk, embed, index, synthesize, adapter_train, continual_update)


def _questions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _delta(kb: Path, folder: Path) -> tuple[set[str], list[str]]:
    """Revise the answers of two test questions, add three documents with a test question each,
    remove one other document; returns (removed ids, revised question ids)."""
    items = _questions(kb / "qa.jsonl")
    tests = [q for q in items if q["split"] == "test"]
    revised = [tests[0], next(q for q in tests if q["doc_id"] != tests[0]["doc_id"])]
    sent = []
    for question in revised:
        doc = kb / "docs" / f"{question['doc_id']}.md"
        new_answer = f"Qorvath {question['id'][-3:]}"
        out = folder / "docs" / f"{question['doc_id']}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(doc.read_text().replace(question["answer"], new_answer))
        sent.append(question | {"answer": new_answer})
    for i in range(3):
        (folder / "docs" / "added").mkdir(parents=True, exist_ok=True)
        (folder / "docs" / "added" / f"n{i}.md").write_text(
            f"# Nordel {i}\n\nThe Nordel {i} site is in Pellast.\n"
        )
        sent.append(
            {"id": f"added/n{i}#site", "question": f"Where is the Nordel {i} site?", "answer": "Pellast"}
            | {"doc_id": f"added/n{i}", "split": "test"}
        )
    (folder / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in sent))
    touched = {q["doc_id"] for q in revised}
    removed = next(q["doc_id"] for q in items if q["doc_id"] not in touched)
    return {removed}, [q["id"] for q in revised]


def test_a_delta_update_carries_everything_else_forward(tmp_path: Path) -> None:
    kb = tmp_path / "data" / "raw" / "kb"
    make_corpus(kb, seed=3, entities_per_domain=2)  # flat: docs/ and qa.jsonl
    model = build_tiny_model(tmp_path / "tiny", corpus_texts(kb) + ["Nordel site Pellast Qorvath"])
    params = load_params_file(ROOT / "params.yaml")
    for key, value in {
        "ingest.source": "data/raw/kb",
        "model.base": str(model),
        "adapter-train.steps": 3,
        "adapter-train.max_trainable_share": 0.5,
        "adapter-train.synthesize.mode": "off",
        "continual-update.steps": 2,
        "evaluate.max_questions": 0,
        "evaluate.max_new_tokens": 3,
    }.items():
        set_dotted(params, key, value)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))  # add_delta finds the corpus there
    layout = Paths(tmp_path)
    for stage in STAGES:
        run_stage(stage, params, layout.root)
    before = json.loads((layout.metrics / "continual.json").read_text())
    v1_docs = len(list((kb / "docs").rglob("*.md")))

    removed, revised = _delta(kb, tmp_path / "delta")
    name, summary = add_delta(tmp_path, tmp_path / "delta", removed)
    assert name == "v2" and (kb / "v1" / "docs").is_dir() and not (kb / "docs").exists()
    assert len(list((kb / "v2" / "docs").rglob("*.md"))) == v1_docs + 3 - 1
    assert (summary.questions_new, summary.questions_revised) == (
        3,
        2,
    ) and summary.documents_removed == sorted(removed)

    for stage in (*STAGES, evaluate):
        run_stage(stage, params, layout.root)
    after = json.loads((layout.metrics / "continual.json").read_text())
    gone = sum(q["doc_id"] in removed and q["split"] == "train" for q in _questions(kb / "v1" / "qa.jsonl"))
    assert after["versions_learned"] == ["v1", "v2"]
    assert after["replay_size"] >= before["replay_size"] - gone > 0  # the reservoir was kept
    metrics = json.loads((layout.metrics / "evaluate.json").read_text())
    changes = metrics["by_change"]
    v2_tests = [q for q in _questions(kb / "v2" / "qa.jsonl") if q["split"] == "test"]
    assert changes["new"]["questions"] == 3 and changes["revised"]["questions"] == 2
    assert changes["unchanged"]["questions"] == len(v2_tests) - 5 > 0
    assert all(changes[k]["adapter"]["f1"] is not None for k in ("new", "revised", "unchanged"))
    rows = [json.loads(line) for line in layout.predictions.read_text().splitlines()]
    assert {r["id"] for r in rows if r["change"] == "revised"} == set(revised)
    assert "By change since the previous corpus version" in layout.evaluation_table.read_text()
