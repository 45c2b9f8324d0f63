"""PEFT adapters on tiny random models: build by name, train, save and reload as one artifact."""

from pathlib import Path

import pytest
import torch

from components.adapters.base_model import load_base_model
from components.adapters.generation import generate
from components.adapters.peft_adapter import (
    attach_adapter,
    count_parameters,
    load_artifact,
    peft_config,
    read_artifact_config,
    save_artifact,
)
from components.adapters.prompting import build_prompt
from components.training.examples import Example
from components.training.trainer import encode, train
from tests.conftest import build_tiny_model

METHODS = {
    "lora": {"r": 4, "lora_alpha": 8},
    "ia3": {},
    "adalora": {"init_r": 6, "target_r": 2, "tinit": 1, "tfinal": 1},
}
# how far 30 steps must bring the loss down on a tiny random model (IA3 only rescales: it moves least)
LOSS_RATIO = {"lora": 0.2, "adalora": 0.5, "ia3": 0.9}
EXAMPLES = [
    Example(
        "q1",
        "What is the maximum daily dose of Zorvex?",
        "120 mg",
        "d1",
        ["The maximum daily dose of Zorvex is 120 mg."],
    ),
    Example(
        "q2",
        "Who manufactures Zorvex?",
        "Talmir Labs",
        "d1",
        ["Zorvex is manufactured by Talmir Labs."],
    ),
]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def family_model(request, tmp_path_factory) -> Path:  # noqa: ANN001
    texts = [e.question + " " + e.answer + " " + " ".join(e.passages) for e in EXAMPLES]
    from components.adapters.prompting import WITH_CONTEXT

    return build_tiny_model(
        tmp_path_factory.mktemp(request.param),
        texts + [WITH_CONTEXT, "Context: Answer:"],
        request.param,
    )


def _logits(model, tokenizer) -> torch.Tensor:  # noqa: ANN001
    batch = tokenizer(
        [build_prompt(tokenizer, EXAMPLES[0].question, EXAMPLES[0].passages)], return_tensors="pt"
    )
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("method", sorted(METHODS))
def test_adapter_learns_saves_and_reloads(method: str, family_model: Path, tmp_path: Path) -> None:
    base, tokenizer = load_base_model(str(family_model))
    before = _logits(base, tokenizer)
    model = attach_adapter(base, method, METHODS[method], total_steps=40)
    counts = count_parameters(model)
    assert 0 < counts["trainable"] < counts["total"]
    if method == "lora":  # zero-initialised B: a fresh adapter changes nothing
        assert torch.allclose(_logits(model, tokenizer), before, atol=1e-6)
    on_step = (lambda s: model.base_model.update_and_allocate(s)) if method == "adalora" else None
    stats = train(
        model,
        tokenizer,
        EXAMPLES,
        steps=40,
        batch_size=2,
        lr=3e-2,
        max_length=128,
        autocast_bf16=False,
        on_step=on_step,
    )
    assert stats["final_loss"] < LOSS_RATIO[method] * stats["first_loss"]
    trained = _logits(model, tokenizer)
    assert not torch.allclose(trained, before, atol=1e-4)
    save_artifact(model, tmp_path / "artifact", {"base_model": str(family_model), "method": method})
    assert (tmp_path / "artifact" / "adapter_model.safetensors").exists()
    assert read_artifact_config(tmp_path / "artifact")["method"] == method
    fresh, _ = load_base_model(str(family_model))
    reloaded = load_artifact(tmp_path / "artifact", fresh)
    assert torch.allclose(_logits(reloaded, tokenizer), trained, atol=1e-5)


def test_memorised_answer_is_generated(family_model: Path) -> None:
    base, tokenizer = load_base_model(str(family_model))
    model = attach_adapter(base, "lora", {"r": 8, "lora_alpha": 16})
    train(
        model,
        tokenizer,
        EXAMPLES,
        steps=40,
        batch_size=2,
        lr=3e-2,
        max_length=128,
        autocast_bf16=False,
    )
    prompt = build_prompt(tokenizer, EXAMPLES[1].question, EXAMPLES[1].passages)
    assert generate(model, tokenizer, [prompt], max_new_tokens=6)[0].replace(" ", "") == "TalmirLabs"


def test_labels_cover_only_the_answer(family_model: Path) -> None:
    _, tokenizer = load_base_model(str(family_model))
    ids, labels = encode(tokenizer, EXAMPLES[0], max_length=512)
    target = [t for t in labels if t != -100]
    assert tokenizer.decode(target, skip_special_tokens=True).replace(" ", "") == "120mg"
    assert len(ids) == len(labels)
    short_ids, short_labels = encode(tokenizer, EXAMPLES[0], max_length=8)
    assert len(short_ids) == 8 and [t for t in short_labels if t != -100] == target


def test_unknown_method_lists_peft_methods() -> None:
    with pytest.raises(ValueError, match="unknown adapter method 'lorra'.*lora"):
        peft_config("lorra", {})
    assert peft_config("adalora", {"init_r": 4, "target_r": 2}, total_steps=17).total_step == 17
