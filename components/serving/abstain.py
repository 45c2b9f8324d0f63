"""Answers that admit what they do not know (`serve.abstain`): the service says the documents do
not answer instead of guessing, when the best passage is too far from the question (`similarity`,
decided before generating) or when too little of the answer is found in the passages
(`support`, decided after). benchmarks/abstention.py measures both on a corpus with documents
removed and fits their thresholds."""

from __future__ import annotations

import numpy as np

from components.core.serve_params import AbstainSettings
from components.evaluation.metrics import support_share


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
