"""One continual update of an adapter, with the fixed-size defences against forgetting.

Shared by the `continual-update` stage and the continual benchmark, so the benchmark measures
exactly what the pipeline runs: fine-tune the current adapter (never from scratch) on the new
examples mixed with replayed ones, optionally pulled toward the previous version by online EWC
and by distillation on replayed facts whose answers did not change, then fold this update into
the running Fisher estimate.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from components.adapters.retro_model import RetroModel
from components.continual.regularizers import Distillation, OnlineEWC, combined
from components.training.examples import Example
from components.training.trainer import batches_of, train


@dataclass
class UpdateOptions:
    """How one update trains; the stage fills it from params.yaml, the benchmark from its settings."""

    steps: int
    lr: float
    batch_size: int = 4
    max_length: int = 256
    seed: int = 0
    bf16: bool = False
    replay_ratio: float = 0.5
    distill_weight: float = 0.0
    distill_top_k: int = 16
    ewc_batches: int = 8


def unchanged_pairs(items: list[dict]) -> set[tuple[str, str]]:
    """(id, answer) of replayed items before a refresh: the facts safe to distil afterwards."""
    return {(it["id"], it["answer"]) for it in items}


def update_adapter(
    model: RetroModel,
    new: list[Example],
    replay: list[Example],
    options: UpdateOptions,
    ewc: OnlineEWC | None = None,
    unchanged: AbstractSet[tuple[str, str]] = frozenset(),
    desc: str = "continual-update",
) -> dict[str, Any]:
    """Fine-tune `model` in place on `new` with `replay` mixed in; returns the trainer's stats.

    Distillation (when `options.distill_weight` > 0) uses the replayed examples whose
    (id, answer) is in `unchanged`, so a revised fact is never pulled back to its old value.
    With `ewc`, the penalty applies during training and the estimate is updated afterwards.
    """
    size = (options.batch_size, options.max_length)
    stable = [e for e in replay if (e.qid, e.answer) in unchanged]
    distillation = None
    if options.distill_weight and stable:
        distillation = Distillation(options.distill_weight, options.distill_top_k)
        distillation.record(model, batches_of(model, stable, *size))
    stats = train(
        model,
        new,
        options.steps,
        options.batch_size,
        options.lr,
        options.max_length,
        options.seed,
        autocast_bf16=options.bf16,
        replay=replay or None,
        replay_ratio=options.replay_ratio if replay else 0.0,
        desc=desc,
        regularizer=combined(model, ewc, distillation),
    )
    if ewc is not None:
        batches = [b for _, b in batches_of(model, new + replay, *size)][: options.ewc_batches]
        ewc.consolidate(model, batches, lambda batch: model(**batch).loss)
    return stats
