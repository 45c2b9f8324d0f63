"""The promotion gate's rules (components/registry/gate.py) on per-question scores with known outcomes.

The same rules through evaluate and register with real adapters: tests/integration/test_promotion_gate.py.
"""

from __future__ import annotations

import math

import pytest

from components.registry.gate import ChampionScores, decide

N = 20
GOOD = [1.0] * 16 + [0.0] * 4  # 0.80
RAG = [1.0] * 4 + [0.0] * 16  # 0.20, wrong where GOOD is right


def champion(scores: list[float] | None, problem: str | None = None) -> ChampionScores:
    return ChampionScores("3", scores, problem)


@pytest.mark.parametrize(
    ("candidate", "rag", "champ", "promote", "reason"),
    [
        ([], [], None, False, "no held-out questions"),
        (None, RAG, None, False, "the candidate has no per-question f1 scores"),
        (GOOD, None, None, False, "RAG (base model + retrieval) has no per-question scores"),
        (GOOD[:-1] + [math.nan], RAG, None, False, "the candidate has a NaN"),
        (RAG, RAG, None, False, "does not lie above 0"),  # a tie with RAG does not beat it
        (GOOD, RAG, None, True, "no champion yet"),
        (GOOD, RAG, champion(GOOD), True, "meets min_gain 0"),  # a tie with the champion passes
        (GOOD, RAG, champion([1.0] * N), False, "below register.min_gain"),
        (GOOD, RAG, champion(None, "champion v3 could not be served (gone)"), False, "could not be served"),
        (GOOD, RAG, champion(GOOD[:-1] + [math.nan]), False, "champion v3 has a NaN"),
        (GOOD, RAG, champion(GOOD[:10]), False, "scored on 10 questions, the candidate on 20"),
    ],
    ids=[
        "no-questions",
        "no-candidate-scores",
        "no-rag-scores",
        "nan-candidate",
        "tie-with-rag",
        "first",
        "tie-with-champion",
        "worse-than-champion",
        "champion-not-served",
        "nan-champion",
        "champion-other-questions",
    ],
)
def test_gate_outcomes(
    candidate: list | None, rag: list | None, champ: object, promote: bool, reason: str
) -> None:
    decision = decide(candidate, rag, champ, "f1")
    assert decision.promote is promote and reason in decision.reason


def test_a_champion_at_one_is_matched_by_an_equal_candidate() -> None:
    perfect = [1.0] * N
    decision = decide(perfect, RAG, champion(perfect), "f1")
    assert decision.promote
    assert decision.figures["gate.candidate_minus_champion"] == 0.0
    assert decision.figures["gate.champion_f1"] == 1.0


def test_min_gain_and_max_regression_are_both_applied() -> None:
    # one question worse than the champion: point -0.05, its interval reaches below -0.02
    slightly_worse = GOOD[:15] + [0.0] * 5
    decision = decide(slightly_worse, RAG, champion(GOOD), "f1", min_gain=0.0, max_regression=0.02)
    assert not decision.promote and "below register.min_gain" in decision.reason
    # better on average but with one large loss: the point gain passes, the lower bound may not
    mixed = [1.0] * 17 + [0.0] * 3
    champ = [0.0] + [1.0] * 15 + [0.0, 1.0, 0.0, 0.0]  # the candidate wins 2 questions, loses 1
    loose = decide(mixed, RAG, champion(champ), "f1", max_regression=0.5)
    strict = decide(mixed, RAG, champion(champ), "f1", max_regression=0.0)
    assert loose.promote and not strict.promote and "may be worse" in strict.reason
    figures = strict.figures
    assert figures["gate.candidate_minus_champion_lo"] < 0 < figures["gate.candidate_minus_champion"]
