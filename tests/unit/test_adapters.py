"""Adapter method x fusion mode x model family on tiny random models built in the test.

Test ids carry the names: `pytest -k ia3`, `pytest -k "gated and t5"`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from components.adapters.base_model import load_base_model
from components.adapters.builder import (
    BudgetExceeded,
    build_retro_model,
    export_merged,
    load_retro_model,
    parameter_report,
)
from components.adapters.generation import generate
from components.adapters.peft_adapter import peft_config
from components.adapters.prompting import WITH_CONTEXT, WITHOUT_CONTEXT, build_prompt
from components.adapters.retro_model import RetroModel, unwrap
from components.training.examples import Example
from components.training.trainer import collate, encode, train
from tests.conftest import build_tiny_model

METHODS = {
    "lora": {"r": 4, "lora_alpha": 8},
    "adalora": {"init_r": 6, "target_r": 2, "tinit": 1, "tfinal": 1},
    "ia3": {},
}
FUSIONS = {
    "in_context": {"fusion": "in_context"},
    "kv": {"fusion": "kv"},
    "gated": {"fusion": "gated", "gate": "head"},
}
FAMILIES = ["llama", "gpt2", "t5"]
# kv and gated need a decoder-only model, gated rotary positions too (tests/unit/test_kv_fusion.py)
FAMILIES_OF = {"in_context": FAMILIES, "kv": ["llama", "gpt2"], "gated": ["llama"]}
MATRIX = [(fusion, family) for fusion, families in FAMILIES_OF.items() for family in families]
EXAMPLES = [
    Example(
        "q1",
        "What is the maximum daily dose of Zorvex?",
        "120 mg",
        "d1",
        ["The maximum daily dose of Zorvex is 120 mg.", "Talmir Labs is in Varnholt."],
    ),
    Example(
        "q2",
        "Who manufactures Zorvex?",
        "Talmir Labs",
        "d1",
        ["Zorvex is manufactured by Talmir Labs.", "The Varnholt Act dates from 1999."],
    ),
]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    texts = [" ".join([e.question, e.answer, *e.passages]) for e in EXAMPLES]
    texts += [WITH_CONTEXT, WITHOUT_CONTEXT, "Context: Question: Answer: [1] [2]"]
    return {f: build_tiny_model(tmp_path_factory.mktemp(f), texts, f) for f in FAMILIES}


def _build(folder: Path, method: str, fusion: str) -> RetroModel:
    base, tokenizer = load_base_model(str(folder))
    torch.manual_seed(0)
    return build_retro_model(
        base, tokenizer, method, METHODS[method], FUSIONS[fusion], total_steps=10, max_trainable_share=None
    )


def _batch(model: RetroModel) -> dict:
    return collate(model, [encode(model, e, 256) for e in EXAMPLES], EXAMPLES)


def _logits(model: RetroModel, batch: dict) -> torch.Tensor:
    # no labels: peft's AdaLoRA adds its training-only regulariser whenever labels are given
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if model.is_seq2seq:
        inputs["decoder_input_ids"] = unwrap(model.model)._shift_right(batch["labels"])
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize(("fusion", "family"), MATRIX)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_matrix(method: str, fusion: str, family: str, family_dirs: dict[str, Path], tmp_path: Path) -> None:
    model = _build(family_dirs[family], method, fusion)
    model.eval()
    batch = _batch(model)

    # a freshly attached adapter and fusion block leave the base model's logits exactly unchanged
    with model.base_only():
        base_logits = _logits(model, batch)
    assert torch.equal(_logits(model, batch), base_logits)

    report = parameter_report(model)
    assert report["trainable"] == sum(p.numel() for p in model.trainable_parameters()) > 0
    assert 0 < report["trainable_share"] < 1
    assert (report["fusion"] > 0) == (fusion == "gated")

    # one optimiser step lowers the loss on a fixed batch
    # (eval mode throughout, so dropout cannot blur the comparison)
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=1e-2)
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        assert model(**batch).loss < loss.detach()
    if fusion == "gated":  # the gate itself learned to open
        assert float(model.fusion["memory_gate"].gate.abs().sum()) > 0

    # save then load reproduces the logits
    trained = _logits(model, batch)
    model.save(tmp_path / "artifact", {"base_model": str(family_dirs[family]), "method": method})
    loaded = load_retro_model(tmp_path / "artifact")
    assert loaded.fusion_mode == fusion
    assert torch.allclose(_logits(loaded, _batch(loaded)), trained, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_learns_to_answer(family: str, family_dirs: dict[str, Path]) -> None:
    model = _build(family_dirs[family], "lora", "in_context")
    stats = train(model, EXAMPLES, steps=40, batch_size=2, lr=3e-2, max_length=256, autocast_bf16=False)
    assert stats["final_loss"] < 0.2 * stats["first_loss"]
    prompt = build_prompt(model.tokenizer, EXAMPLES[1].question, EXAMPLES[1].passages)
    assert generate(model, [prompt], max_new_tokens=6)[0].replace(" ", "") == "TalmirLabs"


def test_labels_cover_only_the_answer(family_dirs: dict[str, Path]) -> None:
    model = _build(family_dirs["llama"], "lora", "in_context")
    ids, labels = encode(model, EXAMPLES[0], max_length=512)
    target = [t for t in labels if t != -100]
    assert model.tokenizer.decode(target, skip_special_tokens=True).replace(" ", "") == "120mg"
    short_ids, short_labels = encode(model, EXAMPLES[0], max_length=8)
    assert len(short_ids) == 8 and [t for t in short_labels if t != -100] == target
    fused = _build(family_dirs["llama"], "lora", "kv")
    assert "Talmir Labs is in Varnholt" not in fused.tokenizer.decode(encode(fused, EXAMPLES[0], 512)[0])


def test_budget_is_enforced_with_the_count(family_dirs: dict[str, Path]) -> None:
    base, tokenizer = load_base_model(str(family_dirs["llama"]))
    with pytest.raises(BudgetExceeded, match=r"trainable parameters \(.* adapter \+ .* fusion\) are .*%"):
        build_retro_model(base, tokenizer, "lora", {"r": 4}, FUSIONS["gated"], max_trainable_share=0.01)
    model = build_retro_model(base, tokenizer, "lora", {"r": 4}, FUSIONS["gated"], max_trainable_share=None)
    layers, heads = len(unwrap(model.model).model.layers), unwrap(model.model).config.num_attention_heads
    assert parameter_report(model)["fusion"] == layers * heads  # the gate is all gated fusion trains


def test_unknown_method_lists_peft_methods() -> None:
    with pytest.raises(ValueError, match="unknown adapter method 'lorra'.*lora"):
        peft_config("lorra", {})
    assert peft_config("adalora", {"init_r": 4, "target_r": 2}, total_steps=17).total_step == 17
    assert peft_config("lora", {}, seq2seq=True).task_type == "SEQ_2_SEQ_LM"


def test_an_artifact_with_the_removed_adapter_reranker_is_refused(
    family_dirs: dict[str, Path], tmp_path: Path
) -> None:
    model = _build(family_dirs["llama"], "lora", "in_context")
    model.save(tmp_path / "old", {"base_model": str(family_dirs["llama"]), "method": "lora"})
    config_path = tmp_path / "old" / "retro_config.json"
    config = json.loads(config_path.read_text())
    config["fusion_settings"] |= {"rerank": True, "rerank_rank": 64}  # as adapter-train.supervision saved it
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"adapter-train.supervision.*retrain"):
        load_retro_model(tmp_path / "old")
    config["fusion_settings"]["rerank"] = False  # switched off: loads as before
    config_path.write_text(json.dumps(config))
    assert load_retro_model(tmp_path / "old").fusion_mode == "in_context"


def test_artifacts_of_the_retired_low_rank_blocks_are_refused_and_kv_gate_ones_load_as_gated(
    family_dirs: dict[str, Path], tmp_path: Path
) -> None:
    model = _build(family_dirs["llama"], "lora", "gated")
    with torch.no_grad():
        model.fusion["memory_gate"].gate.fill_(0.5)
    model.save(tmp_path / "a", {"base_model": str(family_dirs["llama"]), "method": "lora"})
    config_path = tmp_path / "a" / "retro_config.json"
    config = json.loads(config_path.read_text())
    old_block = {"layers": [1], "rank": 8, "heads": 2, "gate": "token", "memory_source": "base"}
    for fusion in ("cross_attention", "gated"):  # as the low-rank blocks saved them
        config["fusion"] = fusion
        config["fusion_settings"] = {**old_block, "fusion": fusion, "chunk_tokens": 96}
        config_path.write_text(json.dumps(config))
        with pytest.raises(ValueError, match=f"retired low-rank {fusion} block: retrain it with fusion kv"):
            load_retro_model(tmp_path / "a")
    # kv with kv_gate (the gate's first name) is today's gated, with the same weights
    config["fusion"] = "kv"
    config["fusion_settings"] = {
        **old_block,
        "gate": "layer",
        "fusion": "kv",
        "kv_gate": "head",
        "chunk_tokens": 96,
    }
    config_path.write_text(json.dumps(config))
    loaded = load_retro_model(tmp_path / "a")
    assert (loaded.fusion_mode, loaded.settings["gate"]) == ("gated", "head")
    assert torch.equal(loaded.fusion["memory_gate"].gate, model.fusion["memory_gate"].gate)


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_merged_export_gives_the_adapter_outputs(
    method: str, family_dirs: dict[str, Path], tmp_path: Path
) -> None:
    model = _build(family_dirs["llama"], method, "in_context")
    train(model, EXAMPLES, steps=5, batch_size=2, lr=3e-2, max_length=256, autocast_bf16=False)
    batch = _batch(model)
    expected = _logits(model, batch)
    model.save(tmp_path / "artifact", {"base_model": str(family_dirs["llama"]), "method": method})
    export_merged(tmp_path / "artifact", tmp_path / "merged")
    merged, _ = load_base_model(str(tmp_path / "merged"))
    with torch.no_grad():
        got = merged(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(got, expected, atol=1e-4)
    fused = _build(family_dirs["llama"], "lora", "gated")
    fused.save(tmp_path / "fused", {"base_model": str(family_dirs["llama"]), "method": "lora"})
    with pytest.raises(ValueError, match="only in_context adapters can be merged"):
        export_merged(tmp_path / "fused", tmp_path / "nope")


def test_an_artifact_of_another_schema_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    import json

    from components.adapters.base_model import load_base_model
    from components.adapters.builder import build_retro_model, load_retro_model
    from components.core.artifacts import SchemaMismatch

    base, tokenizer = load_base_model(str(tiny_model))
    build_retro_model(base, tokenizer, "lora", {"r": 2}, max_trainable_share=None).save(
        tmp_path / "a", {"base_model": str(tiny_model), "method": "lora"}
    )
    config = json.loads((tmp_path / "a" / "retro_config.json").read_text())
    assert config["schema_version"] == 1
    config["schema_version"] = 0
    (tmp_path / "a" / "retro_config.json").write_text(json.dumps(config))
    with pytest.raises(SchemaMismatch, match=r"schema 0, this version reads schema 1: train it again"):
        load_retro_model(tmp_path / "a")
