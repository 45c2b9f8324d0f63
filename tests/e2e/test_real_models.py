"""The real default models: packaged SmolLM2-135M-Instruct and all-MiniLM-L6-v2.

A short LoRA run with retrieved passages must already beat the base model without retrieval.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.adapters.base_model import DEFAULT_BASE_MODEL, load_base_model, resolve_base_model
from components.adapters.builder import build_retro_model, parameter_report
from components.adapters.generation import generate
from components.adapters.prompting import build_prompt
from components.data.synthetic import make_corpus
from components.embed.encoder import encode
from components.evaluation.gold import GoldFinder
from components.evaluation.metrics import mean, token_f1
from components.stores.retriever import Retriever
from components.training.examples import with_retrieval
from components.training.trainer import train


@pytest.mark.slow
def test_short_lora_run_with_retrieval_beats_the_base_model(tmp_path: Path) -> None:
    make_corpus(tmp_path / "kb", seed=11, entities_per_domain=2)
    docs = sorted((tmp_path / "kb" / "docs").rglob("*.md"))
    ids = [p.relative_to(tmp_path / "kb" / "docs").with_suffix("").as_posix() for p in docs]
    texts = [p.read_text() for p in docs]
    vectors = encode(texts)
    assert vectors.shape == (len(docs), 384)
    retriever = Retriever.build(ids, texts, vectors, [{"doc_id": i} for i in ids], "all-MiniLM-L6-v2")
    qa = [json.loads(line) for line in (tmp_path / "kb" / "qa.jsonl").read_text().splitlines()]
    gold = GoldFinder.whole_documents(ids, texts)
    train_set = with_retrieval([q for q in qa if q["split"] == "train"], retriever, 2, gold)
    test_set = with_retrieval(
        [q for q in qa if q["split"] == "test"][:6], retriever, 2, gold, ensure_gold=False
    )

    assert (Path(resolve_base_model(DEFAULT_BASE_MODEL)) / "model.safetensors").exists()
    base, tokenizer = load_base_model(DEFAULT_BASE_MODEL)
    assert base.config.model_type == "llama" and tokenizer.chat_template
    model = build_retro_model(base, tokenizer, "lora", {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05})
    assert parameter_report(model)["trainable_share"] < 0.01
    with model.base_only():
        no_context = generate(model, [build_prompt(tokenizer, e.question, None) for e in test_set], 12)
    stats = train(model, train_set, steps=6, batch_size=4, lr=2e-3, max_length=256)
    assert stats["final_loss"] < stats["first_loss"]
    adapted = generate(model, [build_prompt(tokenizer, e.question, e.passages) for e in test_set], 12)

    base_f1 = mean([token_f1(p, e.answer) for p, e in zip(no_context, test_set, strict=True)])
    adapter_f1 = mean([token_f1(p, e.answer) for p, e in zip(adapted, test_set, strict=True)])
    assert adapter_f1 > base_f1, (adapted, no_context)
