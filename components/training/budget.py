"""Training budgets from the data: steps from epochs over the questions, a validation split carved
from train, and early stopping on it."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import torch

from components.training.examples import Example

MIN_VALIDATION = 4  # fewer held-out questions than this give a loss too noisy to stop on


def split_validation(examples: list[Example], share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, validation): a seeded `share` of the examples held out, in their original order;
    no validation when it would hold fewer than MIN_VALIDATION examples."""
    n_validation = int(len(examples) * share)
    if n_validation < MIN_VALIDATION or len(examples) - n_validation < MIN_VALIDATION:
        return list(examples), []
    held = set(random.Random(seed).sample(range(len(examples)), n_validation))
    train = [e for i, e in enumerate(examples) if i not in held]
    return train, [e for i, e in enumerate(examples) if i in held]


def planned_steps(epochs: float, steps: int | None, examples: int, batch_size: int) -> tuple[int, str]:
    """(optimiser steps, where the number came from): `steps` when set, else enough batches for
    `epochs` passes over `examples`."""
    if steps is not None:
        return steps, "adapter-train.steps"
    return max(1, math.ceil(epochs * examples / batch_size)), f"{epochs:g} epochs x {examples} examples"


@dataclass
class EarlyStopping:
    """Validation checks every `every` steps (and after the last); stop after `patience` checks
    without a better loss (0: never stop, still keep the best weights)."""

    examples: list[Example]
    every: int
    patience: int
    min_delta: float = 1e-4
    history: list[float] = field(default_factory=list)
    best_loss: float = math.inf
    best_step: int = 0
    waited: int = 0
    _best: list[torch.Tensor] | None = None

    def due(self, step: int, total: int) -> bool:
        """Whether validation runs at `step`."""
        return step % max(1, self.every) == 0 or step == total

    def check(self, step: int, loss: float, params: list[torch.Tensor]) -> None:
        """Record a validation loss and keep the best weights seen."""
        self.history.append(loss)
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_step, self.waited = loss, step, 0
            self._best = [p.detach().clone() for p in params]
        else:
            self.waited += 1

    def should_stop(self) -> bool:
        """Whether the loss has not improved for `patience` checks."""
        return self.patience > 0 and self.waited >= self.patience

    @torch.no_grad()
    def restore_best(self, params: list[torch.Tensor]) -> None:
        """Put the weights of the best check back (when a later check was worse)."""
        if self._best is not None and self.waited:
            for p, best in zip(params, self._best, strict=True):
                p.copy_(best)

    def summary(self) -> dict[str, Any]:
        """Validation figures of the run, for the stage's metrics."""
        return {
            "validation_examples": len(self.examples),
            "validation_losses": [round(x, 4) for x in self.history],
            "best_validation_loss": self.best_loss,
            "best_step": self.best_step,
            "stopped_early": self.should_stop(),
        }
