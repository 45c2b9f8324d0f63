"""Training batches come in a few shapes, and the padding that makes them changes no loss or gradient.

A batch padded to its own longest example has a new shape at almost every step; on a CPU with
bfloat16 each new shape leaves native memory behind (BENCHMARKS: memory across 50 updates).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.adapters.base_model import load_base_model
from components.adapters.builder import build_retro_model
from components.adapters.retro_model import RetroModel
from components.training.examples import Example
from components.training.trainer import KEEP_MULTIPLE, PAD_MULTIPLE, answer_loss, collate, encode

PASSAGE = "The team of the clinic owns the protocol and reviews it every year in spring."


def _examples(count: int) -> list[Example]:
    """Questions of growing length, each with a passage: every batch has another longest example."""
    return [
        Example(f"q{i}", "Who owns the protocol " + "and its annex " * i + "?", "the team", "d1", [PASSAGE])
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def model(tiny_model: Path) -> RetroModel:
    base, tokenizer = load_base_model(str(tiny_model))
    torch.manual_seed(0)
    return build_retro_model(base, tokenizer, "lora", {"r": 4, "lora_alpha": 8}, max_trainable_share=None)


def _loss_and_grads(model: RetroModel, batch: dict, full: bool) -> tuple[float, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss if full else answer_loss(model, model, batch)[0]
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.trainable_parameters()])
    return loss.item(), grads


def test_batches_of_many_lengths_share_a_few_shapes(model: RetroModel) -> None:
    examples = _examples(24)
    rows = [encode(model, e, 256) for e in examples]
    lengths = {len(r[0]) for r in rows}
    widths, kept = set(), set()
    for start in range(0, len(examples), 2):
        batch = collate(model, rows[start : start + 2], examples[start : start + 2])
        widths.add(batch["input_ids"].shape[1])
        with torch.no_grad():
            kept.add(answer_loss(model, model, batch)[1].logits.shape[1])
    assert len(lengths) == 24 and all(w % PAD_MULTIPLE == 0 for w in widths)
    assert len(widths) <= -(-(max(lengths) - min(lengths)) // PAD_MULTIPLE) + 1 < 12
    assert all(k % KEEP_MULTIPLE == 0 for k in kept)


def test_padding_to_a_few_shapes_keeps_the_loss_and_the_gradients(model: RetroModel) -> None:
    candidates = _examples(PAD_MULTIPLE)  # one of these lengths is not a multiple of PAD_MULTIPLE
    longest = next(e for e in candidates if len(encode(model, e, 256)[0]) % PAD_MULTIPLE)
    examples = [candidates[0], longest]
    rows = [encode(model, e, 256) for e in examples]
    exact = collate(model, rows, examples, multiple=1)
    padded = collate(model, rows, examples)
    assert padded["input_ids"].shape[1] > exact["input_ids"].shape[1]
    assert (padded["attention_mask"].sum(1) == exact["attention_mask"].sum(1)).all()
    model.train()
    reference_loss, reference_grads = _loss_and_grads(model, exact, full=True)  # the model's own loss
    loss, grads = _loss_and_grads(model, padded, full=False)
    assert loss == pytest.approx(reference_loss, rel=1e-5)
    assert grads.abs().sum() > 0 and torch.allclose(grads, reference_grads, rtol=1e-4, atol=1e-6)
