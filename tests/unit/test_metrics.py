"""Answer metrics (components/evaluation/metrics.py)."""

import pytest

from components.evaluation.metrics import exact_match, normalize_answer, reciprocal_rank, token_f1


def test_answer_metrics() -> None:
    assert normalize_answer("The  Sulmir team!") == "sulmir team"
    assert exact_match("the Sulmir team", "Sulmir team.") == 1.0
    assert exact_match("120 mg", "12 mg") == 0.0
    assert token_f1("120 mg daily", "120 mg") == pytest.approx(0.8)
    assert token_f1("", "120 mg") == 0.0
    assert reciprocal_rank(["a", "b", "c"], "b") == 0.5 and reciprocal_rank(["a"], "z") == 0.0
