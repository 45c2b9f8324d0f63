"""A low-rank relevance head over frozen base-model encodings, trained toward the gold passage."""

from __future__ import annotations

import math

import torch
from torch import nn


class Reranker(nn.Module):
    """score(question, passage) = <P_q mean(question states), P_p mean(passage states)> / sqrt(rank)."""

    def __init__(self, d_model: int, rank: int = 64) -> None:
        super().__init__()
        self.rank = rank
        self.norm = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, rank, bias=False)
        self.p = nn.Linear(d_model, rank, bias=False)

    def forward(self, questions: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
        """questions [B, d], passages [B, k, d] -> scores [B, k]."""
        q = self.q(self.norm(questions)).unsqueeze(1)
        p = self.p(self.norm(passages))
        return (q * p).sum(-1) / math.sqrt(self.rank)


def rerank_loss(scores: torch.Tensor, gold: list[int | None]) -> torch.Tensor | None:
    """Cross-entropy toward the gold passage, over the examples whose gold passage was retrieved."""
    rows = [i for i, g in enumerate(gold) if g is not None]
    if not rows:
        return None
    target = torch.tensor([gold[i] for i in rows], dtype=torch.long)
    return nn.functional.cross_entropy(scores[rows], target)
