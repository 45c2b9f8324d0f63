"""The train questions of a corpus version split for retrieval: a validation share that fits the
hybrid fusion and judges the reranker, and the rest (the fit split) that fine-tunes the embedder
and trains the reranker. Test questions are never taken. The split is stable: by a hash of the
question id, so the same question is on the same side in every run and every stage.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def validation_share(question_ids: list[str], share: float) -> list[bool]:
    """Which questions are validation questions: a stable `share` by hash of the id, so the same
    question is on the same side in every run and every stage."""
    return [
        int(hashlib.sha1(str(q).encode(), usedforsecurity=False).hexdigest()[:8], 16) / 0xFFFFFFFF < share
        for q in question_ids
    ]


QUESTION_COLUMNS = ["id", "question", "answer", "doc_id", "split", "version"]


def train_split(qa: pd.DataFrame, version: str) -> pd.DataFrame:
    """`version`'s train questions (none, with the columns, for a corpus without questions)."""
    if qa.empty or not set(QUESTION_COLUMNS) <= set(qa.columns):
        return pd.DataFrame(columns=QUESTION_COLUMNS)
    return qa[(qa["version"] == version) & (qa["split"] == "train")]


def validation_split(qa: pd.DataFrame, version: str, share: float) -> pd.DataFrame:
    """The validation share of `version`'s train questions (test questions are never taken)."""
    train = train_split(qa, version)
    return train.loc[np.array(validation_share(train["id"].tolist(), share), dtype=bool)]


def fit_split(qa: pd.DataFrame, version: str, share: float) -> pd.DataFrame:
    """`version`'s train questions outside the validation share: what embedders and rerankers learn from."""
    train = train_split(qa, version)
    return train.loc[~np.array(validation_share(train["id"].tolist(), share), dtype=bool)]
