"""The answer-length budget from the data: a high percentile of the train answers' token lengths."""

from __future__ import annotations

import math

import numpy as np

MIN_NEW_TOKENS = 8
MAX_NEW_TOKENS = 256


def answer_token_budget(tokenizer, answers: list[str], percentile: float) -> int:  # noqa: ANN001 - any HF tokenizer
    """Tokens to generate: the `percentile` of the answers' token lengths, plus one for the end of
    the answer, within [MIN_NEW_TOKENS, MAX_NEW_TOKENS]; MIN_NEW_TOKENS without answers."""
    if not answers:
        return MIN_NEW_TOKENS
    lengths = [len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]
    wanted = math.ceil(float(np.percentile(lengths, percentile))) + 1
    return min(MAX_NEW_TOKENS, max(MIN_NEW_TOKENS, wanted))
