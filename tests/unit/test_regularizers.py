"""Online EWC and distillation on tiny random models: fixed size, zero at the anchor/teacher,
and a step on the penalty moves the model back toward what it protects."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.adapters.base_model import load_base_model
from components.adapters.builder import build_retro_model
from components.adapters.prompting import WITH_CONTEXT, WITHOUT_CONTEXT
from components.adapters.retro_model import RetroModel
from components.continual.regularizers import Distillation, OnlineEWC, answer_positions, combined
from components.training.trainer import answer_loss, batches_of, example_key
from tests.conftest import build_tiny_model
from tests.unit.test_adapters import EXAMPLES


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [" ".join([e.question, e.answer, *e.passages]) for e in EXAMPLES]
    texts += [WITH_CONTEXT, WITHOUT_CONTEXT, "Context: Question: Answer: [1] [2]"]
    return build_tiny_model(tmp_path_factory.mktemp("llama"), texts, "llama")


def _model(folder: Path) -> RetroModel:
    base, tokenizer = load_base_model(str(folder))
    torch.manual_seed(0)
    model = build_retro_model(base, tokenizer, "lora", {"r": 4, "lora_alpha": 8}, max_trainable_share=None)
    _nudge(model)  # LoRA B starts at zero; move it so the adapter matters
    return model


def _nudge(model: RetroModel, scale: float = 0.05, seed: int = 1) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(scale * torch.randn_like(param))


def test_online_ewc_is_zero_at_its_anchor_pulls_back_and_keeps_a_fixed_size(model_dir, tmp_path) -> None:  # noqa: ANN001
    model = _model(model_dir)
    batches = [b for _, b in batches_of(model, EXAMPLES, 1, 256)]
    ewc = OnlineEWC(weight=100.0, gamma=0.5)
    assert ewc.penalty(model) is None
    ewc.consolidate(model, batches, lambda b: model(**b).loss)
    assert float(ewc.penalty(model)) == 0.0
    first = {n: f.clone() for n, f in ewc.fisher.items()}
    assert all(torch.all(f >= 0) for f in first.values()) and any(f.sum() > 0 for f in first.values())

    _nudge(model, seed=2)
    penalty = ewc.penalty(model)
    assert float(penalty) > 0
    distance = sum(((p - ewc.anchor[n]) ** 2).sum() for n, p in model.named_parameters() if p.requires_grad)
    penalty.backward()
    with torch.no_grad():
        for param in model.parameters():
            if param.grad is not None:
                param -= 1e-3 * param.grad / max(float(param.grad.abs().max()), 1e-12)
    model.zero_grad()
    after = sum(((p - ewc.anchor[n]) ** 2).sum() for n, p in model.named_parameters() if p.requires_grad)
    assert after < distance

    ewc.save(tmp_path)
    size = (tmp_path / OnlineEWC.FILE).stat().st_size
    ewc.consolidate(model, batches, lambda b: model(**b).loss)  # a second task folds in, never grows
    for name, fisher in ewc.fisher.items():
        assert fisher.shape == first[name].shape
    ewc.save(tmp_path)
    assert (tmp_path / OnlineEWC.FILE).stat().st_size == size
    again = OnlineEWC.load(tmp_path, 100.0, 0.5)
    assert all(torch.equal(again.fisher[n], ewc.fisher[n]) for n in ewc.fisher)
    assert float(again.penalty(model)) == pytest.approx(0.0, abs=1e-12)


def test_distillation_is_minimal_at_the_teacher_and_skips_unknown_examples(model_dir) -> None:  # noqa: ANN001
    model = _model(model_dir)
    keyed = batches_of(model, EXAMPLES, 2, 256)
    teacher = Distillation(weight=1.0, top_k=8)
    teacher.record(model, keyed)
    assert set(teacher.targets) == {example_key(e) for e in EXAMPLES}
    keys, batch = keyed[0]
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def loss() -> torch.Tensor:
        return teacher.loss(model(**inputs).logits, batch["labels"], keys)

    at_teacher = float(loss())
    _nudge(model, 0.3, seed=2)
    moved = loss()
    assert float(moved) > at_teacher
    # a revised answer is a new key: nothing recorded for it, so no pull toward the old answer
    assert teacher.loss(model(**inputs).logits, batch["labels"], ["q1\x00a new value"] * 2) is None
    positions = answer_positions(batch["labels"][0])
    assert len(positions) == int((batch["labels"][0] != -100).sum())


def test_combined_regularizer_adds_the_terms_in_use(model_dir) -> None:  # noqa: ANN001
    model = _model(model_dir)
    assert combined(model, None, None) is None
    ewc = OnlineEWC(weight=1.0)
    keyed = batches_of(model, EXAMPLES, 2, 256)
    ewc.consolidate(model, [b for _, b in keyed], lambda b: model(**b).loss)
    teacher = Distillation(weight=1.0)
    teacher.record(model, keyed)
    _nudge(model, seed=2)
    keys, batch = keyed[0]
    outputs = model(**batch)
    both = combined(model, ewc, teacher)(EXAMPLES, batch, outputs)
    expected = ewc.penalty(model) + teacher.loss(outputs.logits, batch["labels"], keys)
    assert float(both) == pytest.approx(float(expected), rel=1e-5)


def test_answer_loss_keeps_only_answer_logits_and_matches_the_full_loss(model_dir) -> None:  # noqa: ANN001
    model = _model(model_dir)
    assert model.keeps_logits
    keyed = batches_of(model, EXAMPLES, 3, 256)
    keys, batch = keyed[0]
    full = model(**batch)
    loss, outputs, aligned = answer_loss(model, model, batch)
    assert float(loss) == pytest.approx(float(full.loss), rel=1e-5)
    assert outputs.logits.shape[1] < full.logits.shape[1]  # the prompt was not projected
    assert aligned["labels"].shape[1] == outputs.logits.shape[1]
    # distillation reads the same answer-position logits from either form
    teacher = Distillation(weight=1.0, top_k=8)
    teacher.record(model, keyed)
    _nudge(model, 0.3, seed=2)
    moved = model(**batch)
    expected = teacher.loss(moved.logits, batch["labels"], keys)
    kept_loss, kept, aligned = answer_loss(model, model, batch)
    kept_distillation = teacher.loss(kept.logits, aligned["labels"], keys)
    assert float(kept_distillation) == pytest.approx(float(expected), rel=1e-5)
    # and the gradients are those of the full loss
    kept_loss.backward()
    grads = [p.grad.clone() for p in model.trainable_parameters()]
    model.zero_grad()
    model(**batch).loss.backward()
    for kept_grad, p in zip(grads, model.trainable_parameters(), strict=True):
        assert torch.allclose(kept_grad, p.grad, rtol=1e-4, atol=1e-7)
