"""The promotion gate: a candidate becomes challenger only when it beats plain RAG and is not
worse than the champion, all three scored on the same current test questions.

1. Candidate minus RAG, paired per question: the 95% bootstrap interval must lie above 0.
2. With a champion (its adapter with its own linked index, scored as served): the point estimate
   of candidate minus champion must be >= `min_gain` and the interval's lower bound above
   `-max_regression`. Without a champion only the first condition applies.

Every outcome, including missing or NaN scores, comes with a reason in words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from components.evaluation.intervals import Estimate, paired_difference

TOLERANCE = 1e-9  # equal scores are equal: a tie with the champion meets min_gain 0


@dataclass
class ChampionScores:
    """The champion's per-question scores on the candidate's test questions, or why there are none."""

    version: str
    scores: list[float] | None = None
    problem: str | None = None


@dataclass
class GateDecision:
    """Whether the candidate may become champion, why, and the figures behind it."""

    promote: bool
    reason: str
    figures: dict[str, float] = field(default_factory=dict)  # gate.* MLflow metrics


def _problem(name: str, scores: list[float] | None, n: int) -> str | None:
    if scores is None:
        return f"{name} has no per-question scores"
    if len(scores) != n:
        return f"{name} was scored on {len(scores)} questions, the candidate on {n}"
    if any(not math.isfinite(s) for s in scores):
        return f"{name} has a NaN or infinite score"
    return None


def _figures(name: str, estimate: Estimate) -> dict[str, float]:
    return {f"gate.{name}": estimate.mean, f"gate.{name}_lo": estimate.low, f"gate.{name}_hi": estimate.high}


def decide(
    candidate: list[float] | None,
    rag: list[float] | None,
    champion: ChampionScores | None,
    metric: str,
    min_gain: float = 0.0,
    max_regression: float = 0.02,
    seed: int = 0,
) -> GateDecision:
    """(promote, reason, figures) from per-question `metric` scores of the same test questions."""
    if not candidate:
        if candidate is None:
            return GateDecision(False, f"refused: the candidate has no per-question {metric} scores")
        return GateDecision(False, "no held-out questions were evaluated, so there is nothing to compare")
    n = len(candidate)
    for name, scores in (("the candidate", candidate), ("RAG (base model + retrieval)", rag)):
        problem = _problem(name, scores, n)
        if problem:
            return GateDecision(False, f"refused: {problem}")
    over_rag = paired_difference(candidate, rag, seed)
    figures = _figures("candidate_minus_rag", over_rag)
    if over_rag.low <= 0:
        return GateDecision(
            False,
            f"candidate {metric} minus RAG is {over_rag} over {n} questions: the 95% interval does not "
            "lie above 0, so it does not beat plain retrieval",
            figures,
        )
    if champion is None:
        reason = f"no champion yet; candidate {metric} minus RAG {over_rag} lies above 0"
        return GateDecision(True, reason, figures)
    name = f"champion v{champion.version}"
    problem = champion.problem or _problem(name, champion.scores, n)
    if problem:
        return GateDecision(False, f"refused: {problem}, so it cannot be compared", figures)
    over_champion = paired_difference(candidate, champion.scores, seed)
    figures |= _figures("candidate_minus_champion", over_champion)
    figures[f"gate.champion_{metric}"] = sum(champion.scores) / n
    if over_champion.mean < min_gain - TOLERANCE:
        return GateDecision(
            False,
            f"candidate {metric} minus {name} is {over_champion}: the gain is below register.min_gain "
            f"({min_gain:g})",
            figures,
        )
    if over_champion.low <= -max_regression:
        return GateDecision(
            False,
            f"candidate {metric} minus {name} is {over_champion}: the interval reaches below "
            f"-register.max_regression (-{max_regression:g}), so it may be worse",
            figures,
        )
    return GateDecision(
        True,
        f"candidate {metric} minus RAG {over_rag} lies above 0 and minus {name} {over_champion} "
        f"meets min_gain {min_gain:g} with the lower bound above -{max_regression:g}",
        figures,
    )
