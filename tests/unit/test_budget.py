"""Budgets from the data: the validation split, steps from epochs, early stopping."""

from __future__ import annotations

import torch

from components.training.budget import EarlyStopping, planned_steps, split_validation
from components.training.examples import Example


def _examples(n: int) -> list[Example]:
    return [Example(f"q{i}", f"question {i}?", f"answer {i}", "d", []) for i in range(n)]


def test_the_validation_split_is_seeded_disjoint_and_skipped_when_too_small() -> None:
    train, validation = split_validation(_examples(50), 0.1, seed=0)
    assert len(validation) == 5 and len(train) == 45
    assert {e.qid for e in train}.isdisjoint(e.qid for e in validation)
    assert split_validation(_examples(50), 0.1, seed=0) == (train, validation)
    assert split_validation(_examples(50), 0.1, seed=1)[1] != validation
    assert split_validation(_examples(30), 0.1, seed=0) == (_examples(30), [])  # 3 < 4 held out


def test_steps_come_from_epochs_unless_set() -> None:
    assert planned_steps(3.0, None, 99, 4) == (75, "3 epochs x 99 examples")
    assert planned_steps(0.5, None, 3, 4) == (1, "0.5 epochs x 3 examples")
    assert planned_steps(3.0, 40, 99, 4) == (40, "adapter-train.steps")


def test_early_stopping_stops_after_patience_and_keeps_the_best_weights() -> None:
    weight = torch.nn.Parameter(torch.zeros(2))
    stopper = EarlyStopping(_examples(4), every=5, patience=2)
    assert stopper.due(5, 100) and stopper.due(100, 100) and not stopper.due(6, 100)
    for step, loss in [(5, 1.0), (10, 0.5), (15, 0.7), (20, 0.6)]:
        with torch.no_grad():
            weight.fill_(step)
        stopper.check(step, loss, [weight])
    assert stopper.should_stop() and stopper.best_step == 10
    stopper.restore_best([weight])
    assert weight.tolist() == [10.0, 10.0]
    summary = stopper.summary()
    assert summary["stopped_early"] and summary["validation_losses"] == [1.0, 0.5, 0.7, 0.6]
    never = EarlyStopping(_examples(4), every=5, patience=0)
    for step, loss in [(5, 1.0), (10, 2.0), (15, 3.0)]:
        never.check(step, loss, [weight])
    assert not never.should_stop()
