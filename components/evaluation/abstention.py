"""Answers that admit what they do not know (`serve.abstain`): the service says the documents do
not answer instead of guessing, when the best passage is too far from the question (`similarity`,
decided before generating) or when too little of the answer is found in the passages
(`support`, decided after). benchmarks/abstention.py measures both on a corpus with documents
removed and fits their thresholds."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from components.core.serve_params import AbstainSettings
from components.evaluation.metrics import exact_match, mean, support_share, token_f1


def similarity_reason(settings: AbstainSettings, vectors: np.ndarray) -> str | None:
    """Why to abstain before generating, or None. `vectors`: the question's normalised
    embedding, then each passage's."""
    if settings.mode != "similarity":
        return None
    best = float(np.max(vectors[1:] @ vectors[0])) if len(vectors) > 1 else 0.0
    if best >= settings.threshold:
        return None
    return f"the best passage's similarity to the question is {best:.3f}, under {settings.threshold}"


def support_reason(settings: AbstainSettings, answer: str, passages: list[str]) -> str | None:
    """Why to withhold a generated answer, or None."""
    if settings.mode != "support":
        return None
    share = support_share(answer, passages)
    if share is None or share >= settings.threshold:
        return None
    return f"{share:.0%} of the answer's content words are in the passages, under {settings.threshold:.0%}"


def abstention_figures(
    settings: AbstainSettings,
    questions: list[str],
    passages: list[list[str]],
    predictions: list[str],
    answers: list[str],
    embed: Callable[[list[str]], np.ndarray],
) -> dict[str, float | int | str]:
    """What `settings` would do to the adapter's answers to held-out questions (all answerable):
    the share it abstains on, and EM/F1 of the answers it gives (one embedding call for all)."""
    rows = [[question, *texts] for question, texts in zip(questions, passages, strict=True)]
    vectors = embed([text for row in rows for text in row]) if settings.mode == "similarity" else None
    abstained, start = [], 0
    for row, texts, prediction in zip(rows, passages, predictions, strict=True):
        reason = None if vectors is None else similarity_reason(settings, vectors[start : start + len(row)])
        start += len(row)
        abstained.append((reason or support_reason(settings, prediction, texts)) is not None)
    given = [(p, a) for p, a, out in zip(predictions, answers, abstained, strict=True) if not out]
    return {
        "mode": settings.mode,
        "threshold": settings.threshold,
        "abstained": mean([float(a) for a in abstained]),
        "answers_given": len(given),
        "em_given": mean([exact_match(p, a) for p, a in given]),
        "f1_given": mean([token_f1(p, a) for p, a in given]),
    }
