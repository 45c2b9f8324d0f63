"""The llama.cpp engine on the real default model (packaged SmolLM2-135M-Instruct) with a LoRA
adapter whose weights are off their no-op start: its answers are the torch engine's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.adapters.base_model import DEFAULT_BASE_MODEL, load_base_model
from components.adapters.builder import build_retro_model, load_retro_model
from components.adapters.generation import generate
from components.core.serve_params import LlamaCppSettings

pytest.importorskip("llama_cpp", reason="the llama.cpp engine needs the cpu-engine extra (make install)")

from components.serving.llamacpp_engine import LlamaCppEngine  # noqa: E402

CASES = [
    ("Who manufactures Thafenvel?", ["Thafenvel is manufactured by Brightwater Labs in Osaka."]),
    ("When was the Varnholt Act passed?", ["The Varnholt Act was passed in 2004 by the northern council."]),
    ("What does the Orbell Works inspect?", ["Barges on the river are inspected by the Orbell Works."]),
    ("Where is Quillan?", ["Quillan is a small town in Norway.", "Its harbour freezes in winter."]),
    ("What is the capital of France?", ["Paris is the capital and largest city of France."]),
    ("Who owns the Drakaor procedure?", ["The owner of the Drakaor procedure is Sulmir, since 2019."]),
]


@pytest.mark.slow
def test_llamacpp_answers_like_torch_on_the_default_model(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("RETRO_GGUF_CACHE", str(tmp_path / "gguf"))
    base, tokenizer = load_base_model(DEFAULT_BASE_MODEL)
    torch.manual_seed(3)
    model = build_retro_model(base, tokenizer, "lora", {"r": 8, "lora_alpha": 16}, max_trainable_share=None)
    with torch.no_grad():  # a LoRA that changes answers, as a trained one does
        for name, param in model.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.15)
    model.save(
        tmp_path / "adapter", {"base_model": DEFAULT_BASE_MODEL, "method": "lora", "retrieval": {"k": 2}}
    )
    model = load_retro_model(tmp_path / "adapter")
    prompts = [model.prompt(q, passages) for q, passages in CASES]
    expected = generate(model, prompts, max_new_tokens=16, batch_size=1)
    with model.base_only():
        unadapted = generate(model, prompts, max_new_tokens=16, batch_size=1)
    changed = sum(e != u for e, u in zip(expected, unadapted, strict=True))
    assert changed >= 3  # the adapter changes most answers: an engine that dropped it would fail below
    engine = LlamaCppEngine(model, tmp_path / "adapter", LlamaCppSettings(weights="q8_0", threads=2))
    answers = [engine.answer(p, 16) for p in prompts]
    same = sum(a == b for a, b in zip(answers, expected, strict=True))
    assert same >= len(CASES) - 1, list(zip(answers, expected, strict=True))  # q8_0: EM parity, not bits
