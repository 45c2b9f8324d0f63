"""Continual-learning metrics on constructed inputs with known answers: clipped retention,
backward transfer, forgetting, intervals over seeds and facts, and the paired test; the held-out
phrasings, the PubMedQA task split and the passages the benchmark indexes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.continual_harness import (
    DEFAULT_ANCHORS,
    Settings,
    Task,
    anchor_count,
    passages_of,
    pubmedqa_tasks,
)
from components.continual.metrics import (
    accuracy_summary,
    bootstrap_average_accuracy,
    mcnemar_exact,
    seed_interval,
)
from components.data.chunking import chunk_id
from components.data.synthetic import DOMAINS, KnowledgeBase, heldout_question
from components.evaluation.gold import GoldFinder

NAN = float("nan")


def test_summary_clips_retention_and_defines_bwt_and_forgetting() -> None:
    # task 0 was learned badly (0.25) and answered better later: unclipped it would count 2.0
    r = np.array([[0.25, NAN, NAN], [0.5, 0.8, NAN], [0.5, 0.4, 1.0]])
    s = accuracy_summary(r)
    assert s["average_accuracy"] == pytest.approx((0.5 + 0.4 + 1.0) / 3)
    assert s["backward_transfer"] == pytest.approx(((0.5 - 0.25) + (0.4 - 0.8)) / 2)
    assert s["forgetting"] == pytest.approx(((0.5 - 0.5) + (0.8 - 0.4)) / 2)  # best before the last task
    assert s["retention"] == pytest.approx((1.0 + 0.5) / 2)
    assert s["retention_unclipped"] == pytest.approx((2.0 + 0.5) / 2)


def test_summary_skips_rows_that_were_not_measured() -> None:
    # eval_every: row 1 has its diagonal only; forgetting takes the best measured value
    r = np.array([[1.0, NAN, NAN], [NAN, 0.6, NAN], [0.7, 0.6, 0.9]])
    s = accuracy_summary(r)
    assert s["forgetting"] == pytest.approx(((1.0 - 0.7) + 0.0) / 2)
    assert s["retention"] == pytest.approx((0.7 + 1.0) / 2)


def test_seed_interval_is_student_t() -> None:
    mean, half = seed_interval([0.9, 1.0, 0.95])
    assert mean == pytest.approx(0.95)
    assert half == pytest.approx(4.302653 * 0.05 / math.sqrt(3), rel=1e-5)
    assert math.isnan(seed_interval([0.8])[1])


def test_bootstrap_resamples_facts_within_each_task() -> None:
    task_of = {f"a{i}": 0 for i in range(2)} | {f"b{i}": 1 for i in range(8)}
    right = {q: float(q.startswith("a")) for q in task_of}  # task 0 all right, task 1 all wrong
    assert bootstrap_average_accuracy(right, task_of) == pytest.approx((0.5, 0.5))  # not 0.2: by task
    mixed = {q: float(i % 2) for i, q in enumerate(task_of)}
    low, high = bootstrap_average_accuracy(mixed, task_of, samples=500)
    assert low < 0.5 < high


def test_mcnemar_counts_discordant_facts() -> None:
    ours, theirs = [1] * 8 + [1, 0], [0] * 8 + [1, 0]
    test = mcnemar_exact(ours, theirs)
    assert (test["ours_only"], test["theirs_only"]) == (8, 0)
    assert test["p_value"] == pytest.approx(2 * 0.5**8)
    assert test["difference"] == pytest.approx(0.8)
    assert mcnemar_exact([1, 0], [1, 0])["p_value"] == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar_exact([1], [1, 0])


def test_heldout_question_asks_the_same_fact_in_other_words() -> None:
    kb = KnowledgeBase(seed=3)
    for domain in DOMAINS:
        kb.add_entities(domain.name, 2)
    items = kb.qa()
    for item in items:
        other = heldout_question(item)
        assert other and other != item["question"]
        name = item["doc_id"].split("/")[1]
        assert name in other.lower()
    assert heldout_question({"id": "law/x#nothing", "question": "?", "doc_id": "law/x"}) is None


def test_pubmedqa_tasks_hold_questions_out_of_training(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    rows = []
    for i in range(6):
        (tmp_path / "docs" / f"pubmed-{i}.md").write_text(f"Abstract {i}.")
        rows.append(
            {"id": f"q{i}", "question": f"Q{i}?", "answer": "yes", "doc_id": f"pubmed-{i}", "split": "test"}
        )
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    tasks = pubmedqa_tasks(tmp_path, tasks=3, per_task=2, held_out=1, seed=1)
    assert [len(t.docs) for t in tasks] == [2, 4, 6]  # each snapshot holds every abstract so far
    for task in tasks:
        assert len(task.new) == 2 and len(task.held_out) == 1
        assert [it["id"] for it in task.trained()] == [
            it["id"] for it in task.new if it["id"] not in task.held_out
        ]
    assert len(set().union(*(t.held_out for t in tasks))) == 3
    with pytest.raises(ValueError, match="4 tasks of 2 need 8"):
        pubmedqa_tasks(tmp_path, tasks=4, per_task=2)


def test_passages_are_whole_documents_or_the_chunk_stages_windows() -> None:
    long = " ".join(f"Sentence {i} reports outcome {i} in the trial cohort." for i in range(40))
    task = Task("p001", {"b": "Short abstract.", "a": long}, {}, [])
    whole = passages_of(task)
    assert whole["chunk_id"].tolist() == [chunk_id("a", long), chunk_id("b", "Short abstract.")]
    chunks = passages_of(task, chunk_tokens=64, overlap=8)
    of_a = chunks[chunks["doc_id"] == "a"]
    assert len(of_a) > 4 and of_a["position"].tolist() == list(range(len(of_a)))
    assert all(text in long for text in of_a["text"])
    assert long.startswith(of_a["text"].iloc[0]) and long.endswith(of_a["text"].iloc[-1])
    assert chunks["chunk_id"].is_unique and chunks[chunks["doc_id"] == "b"]["text"].tolist() == [
        "Short abstract."
    ]
    # a yes / no answer is grounded in the whole abstract: every window of it is gold
    assert set(GoldFinder(chunks).find("a", "yes").chunk_ids) == set(of_a["chunk_id"])


def test_label_rows_show_a_method_that_says_yes_to_everything() -> None:
    from benchmarks.continual_labels import label_rows

    gold = {"a": "yes", "b": "yes", "c": "no", "d": "maybe"}
    always_yes = {"method": "lora_rag", "seed": 1, "final": {"a": 1.0, "b": 1.0, "c": 0.0, "d": 0.0}}
    discerning = {"method": "ours", "seed": 1, "final": {"a": 1.0, "b": 0.0, "c": 1.0, "d": 1.0}}
    rows = label_rows([always_yes, discerning], gold)
    assert rows[0] == "| method | seed | yes (n=2) | no (n=1) | maybe (n=1) | all | balanced |"
    assert rows[2] == '| always "yes" | - | 1.000 | 0.000 | 0.000 | 0.500 | 0.333 |'
    assert rows[3] == "| lora_rag | 1 | 1.000 | 0.000 | 0.000 | 0.500 | 0.333 |"
    assert rows[4] == "| ours | 1 | 0.500 | 1.000 | 1.000 | 0.750 | 0.833 |"


def test_only_ours_replays_general_anchors_and_ours_anchors_by_default() -> None:
    default, eight = Settings(base_model="x"), Settings(base_model="x", general_anchors=8)
    assert anchor_count("ours", default) == 0  # the project's default: no anchors
    assert anchor_count("ours_anchors", default) == DEFAULT_ANCHORS > 0
    assert anchor_count("ours", eight) == anchor_count("ours_anchors", eight) == 8
    assert anchor_count("lora_rag_replay", eight) == anchor_count("replay", eight) == 0  # replay only
