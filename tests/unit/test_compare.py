"""Pieces of the side-by-side evaluation (components/evaluation/compare.py)."""

from __future__ import annotations

import pandas as pd

from components.evaluation.compare import held_out, introduced_in

QA = pd.DataFrame(
    [
        {"id": "q1", "question": "a?", "answer": "x", "doc_id": "d1", "split": "test", "version": "v1"},
        {"id": "q1", "question": "a?", "answer": "y", "doc_id": "d1", "split": "test", "version": "v2"},
        {"id": "q2", "question": "b?", "answer": "z", "doc_id": "d2", "split": "test", "version": "v2"},
        {"id": "q3", "question": "c?", "answer": "w", "doc_id": "d3", "split": "train", "version": "v2"},
    ]
)


def test_a_revised_fact_belongs_to_the_version_that_revised_it() -> None:
    assert introduced_in(QA) == {("q1", "x"): "v1", ("q1", "y"): "v2", ("q2", "z"): "v2", ("q3", "w"): "v2"}


def test_held_out_questions_are_a_seeded_sample_of_the_test_split() -> None:
    assert [t["id"] for t in held_out(QA, "v2", 0, seed=0)] == ["q1", "q2"]
    one = held_out(QA, "v2", 1, seed=0)
    assert len(one) == 1 and one == held_out(QA, "v2", 1, seed=0)
