"""`fusion: kv`: retrieved chunks as the base model's own key/values (components/adapters/chunk_kv.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from components.adapters import chunk_kv
from components.adapters.base_model import load_base_model
from components.adapters.builder import build_retro_model, load_retro_model
from components.adapters.generation import generate
from components.adapters.retro_model import RetroModel, unwrap
from components.training.examples import Example
from components.training.trainer import train
from tests.fixtures.tiny_model import build_tiny_model

CHUNKS = ["The maximum daily dose of Zorvex is 120 mg .", "Zorvex is made by Talmir Labs in Varnholt ."]
QUESTIONS = ["Question : What is the dose of Zorvex ? Answer :", "Question : Who makes it ? Answer :"]
LORA = {"r": 4, "lora_alpha": 8}


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    texts = [*CHUNKS, *QUESTIONS]
    return {f: build_tiny_model(tmp_path_factory.mktemp(f), texts, f) for f in ("llama", "gpt2", "t5")}


def _kv_model(folder: Path, form: str = "auto") -> RetroModel:
    base, tokenizer = load_base_model(str(folder))
    torch.manual_seed(0)
    fusion = {"fusion": "kv", "chunk_kv_dtype": form}
    return build_retro_model(base, tokenizer, "lora", LORA, fusion, 10, max_trainable_share=None)


def _ids(model: RetroModel, text: str) -> torch.Tensor:
    return model.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_one_chunk_as_key_values_gives_the_in_context_logits(
    family: str, family_dirs: dict[str, Path]
) -> None:
    model = _kv_model(family_dirs[family])
    chunk, question = _ids(model, CHUNKS[0]), _ids(model, QUESTIONS[0])
    with torch.no_grad():
        fused = model(passages=[[CHUNKS[0]]], input_ids=question).logits
        with model.base_only():  # the reference: the chunk written before the question
            joint = model.model(input_ids=torch.cat([chunk, question], dim=1)).logits
    assert torch.allclose(fused, joint[:, chunk.shape[1] :], atol=1e-5)
    assert not torch.allclose(fused, model(input_ids=question).logits, atol=1e-3)  # it did read the chunk


def test_rotary_keys_move_to_any_offset(family_dirs: dict[str, Path]) -> None:
    model = _kv_model(family_dirs["llama"])
    base = unwrap(model.model)
    at_zero = model.chunk_key_values([CHUNKS[1]])[0]
    ids = _ids(model, CHUNKS[1])
    cache = chunk_kv.DynamicCache(config=base.config)
    with torch.no_grad(), model.base_only():
        base(input_ids=ids, position_ids=torch.arange(7, 7 + ids.shape[1])[None], cache=cache, use_cache=True)
    moved = chunk_kv.shift_keys(at_zero.keys[1], 7, chunk_kv.rotary_embedding(base))
    assert torch.allclose(moved, cache.layers[1].keys[0], atol=1e-5)
    assert torch.allclose(at_zero.values[1], cache.layers[1].values[0], atol=1e-5)  # relative positions only


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_greedy_answers_over_key_values_match_the_in_context_ones(
    family: str, family_dirs: dict[str, Path]
) -> None:
    model = _kv_model(family_dirs[family])
    with model.base_only():  # a fresh adapter is the base model: the reference is plain generation
        reference = generate(model, [f"{c} {q}" for c, q in zip(CHUNKS, QUESTIONS, strict=True)], 6, 2)
    assert generate(model, QUESTIONS, 6, 2, [[c] for c in CHUNKS]) == reference
    assert model.kv_store.counters.computed == 2


def test_an_encoder_decoder_model_is_refused_by_name(family_dirs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="fusion kv needs a decoder-only model; T5ForConditionalGeneration"):
        _kv_model(family_dirs["t5"])
    with pytest.raises(
        ValueError, match="fusion gated needs a decoder-only model; T5ForConditionalGeneration"
    ):
        _gated_model(family_dirs["t5"], "layer")


def test_save_and_load_reproduce_the_kv_logits(family_dirs: dict[str, Path], tmp_path: Path) -> None:
    model = _kv_model(family_dirs["llama"])
    with torch.no_grad():
        for name, weight in model.model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.5)
    question = _ids(model, QUESTIONS[1])
    passages = [[CHUNKS[1], CHUNKS[0]]]
    with torch.no_grad():
        trained = model(passages=passages, input_ids=question).logits
    model.save(tmp_path / "kv", {"base_model": str(family_dirs["llama"]), "method": "lora"})
    loaded = load_retro_model(tmp_path / "kv")
    assert loaded.fusion_mode == "kv"
    with torch.no_grad():
        assert torch.allclose(loaded(passages=passages, input_ids=question).logits, trained, atol=1e-5)


def test_streaming_generation_feeds_the_streamer_and_obeys_stopping_criteria(
    family_dirs: dict[str, Path],
) -> None:
    model = _kv_model(family_dirs["llama"])
    question = _ids(model, QUESTIONS[0])
    received: list[list[int]] = []

    class Collect:
        def put(self, value: torch.Tensor) -> None:
            received.append(value.flatten().tolist())

        def end(self) -> None:
            received.append([])

    def two_new_tokens(sequences: torch.Tensor, scores: torch.Tensor) -> bool:
        return sequences.shape[1] >= question.shape[1] + 2

    out = model.generate(
        passages=[[CHUNKS[0]]],
        input_ids=question,
        attention_mask=torch.ones_like(question),
        max_new_tokens=6,
        streamer=Collect(),
        stopping_criteria=two_new_tokens,
    )
    assert out.shape[1] == question.shape[1] + 2
    assert received == [question[0].tolist(), [int(out[0, -2])], [int(out[0, -1])], []]


@pytest.mark.parametrize("form", ["auto", "bfloat16", "int8"])
def test_the_kv_store_gives_the_same_tensors_from_ram_disk_and_recompute(
    form: str, family_dirs: dict[str, Path], tmp_path: Path
) -> None:
    model = _kv_model(family_dirs["llama"], form)
    model.use_kv_folder(tmp_path / "kv", disk_bytes=2**30)
    store = model.kv_store
    computed = model.chunk_key_values(CHUNKS)
    from_ram = model.chunk_key_values(CHUNKS)
    store._ram.clear()  # a new process: RAM empty, disk tier full
    store._ram_used = 0
    from_disk = model.chunk_key_values(CHUNKS)
    assert store.counters.as_dict() == {"ram_hits": 2, "disk_hits": 2, "computed": 2, "disk_evictions": 0}
    for a, b, c in zip(computed, from_ram, from_disk, strict=True):
        assert all(
            torch.equal(x, y) and torch.equal(x, z)
            for x, y, z in zip(a.keys + a.values, b.keys + b.values, c.keys + c.values, strict=True)
        )
    exact = model._encode_key_values(CHUNKS)[0]  # float32, as encoded (the same batch)
    pairs = zip(exact.keys + exact.values, computed[0].keys + computed[0].values, strict=True)
    error = max(float((a - b).abs().max() / a.abs().max()) for a, b in pairs)  # relative to the largest
    assert error < 1e-6 if form == "auto" else 1e-4 < error < 0.01
    stored = {"auto": 4, "bfloat16": 2, "int8": 1 + 2 / exact.keys[0].shape[-1]}[form] / 4  # bytes a value
    one = exact.nbytes * stored
    assert one * 2 < store.disk_usage() < (one + 2**12) * 2  # tensors plus safetensors headers
    store.disk_bytes = store.disk_usage() - 1  # room for one entry only: the older goes
    store._evict_disk()
    assert store.counters.disk_evictions == 1 and len(list((tmp_path / "kv").glob("*/*.safetensors"))) == 1
    assert store.forget(CHUNKS) >= 2 and not list((tmp_path / "kv").glob("*/*.safetensors"))


LOOKUP = 12  # keys k0..k11 and values v0..v11: closed-book chance is 1/12
LOOKUP_STEPS = 200  # optimiser steps, batch 16, LoRA r=8 on every linear layer, lr 1e-2
# held-out accuracy through the chunks after LOOKUP_STEPS: the three modes score 0.48-0.52 (29-31 of
# 60), closed book 0.15; 0.4 is about 5x chance, which a mode that ignores its chunks cannot reach
LOOKUP_THRESHOLD = 0.4


def lookup_examples(count: int, seed: int) -> list[Example]:
    """`kX` -> `vY` with the pair written in one of two chunks (the other a distractor); every
    pairing is drawn afresh, so only the chunks can tell the answer."""
    rng = random.Random(seed)
    examples = []
    for i in range(count):
        (k1, k2), v1, v2 = rng.sample(range(LOOKUP), 2), rng.randrange(LOOKUP), rng.randrange(LOOKUP)
        chunks = [f"k{k1} v{v1}", f"k{k2} v{v2}"]
        rng.shuffle(chunks)
        examples.append(Example(f"q{seed}-{i}", f"k{k1}", f"v{v1}", "d", chunks))
    return examples


def lookup_accuracy(folder: Path, with_memory: bool, fusion: dict | None = None) -> float:
    """Held-out accuracy after LOOKUP_STEPS of training with `fusion` (default kv)."""
    base, tokenizer = load_base_model(str(folder))
    torch.manual_seed(0)
    lora = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}
    model = build_retro_model(base, tokenizer, "lora", lora, fusion or {"fusion": "kv"}, LOOKUP_STEPS, None)
    train_set, test_set = lookup_examples(400, 0), lookup_examples(60, 1)
    if not with_memory:
        train_set = [Example(e.qid, e.question, e.answer, e.doc_id, []) for e in train_set]
    train(model, train_set, LOOKUP_STEPS, 16, 1e-2, 64, 0, autocast_bf16=False)
    passages = [e.passages if with_memory else [] for e in test_set]
    prompts = [model.prompt(e.question, p) for e, p in zip(test_set, passages, strict=True)]
    answers = generate(model, prompts, 1, 30, passages)
    return sum(a == e.answer for a, e in zip(answers, test_set, strict=True)) / len(test_set)


def lookup_model(folder: Path) -> Path:
    """A tiny llama whose vocabulary holds the lookup's keys and values."""
    vocabulary = [" ".join([*(f"k{i}" for i in range(LOOKUP)), *(f"v{i}" for i in range(LOOKUP))])]
    return build_tiny_model(folder, [*vocabulary, "Question : Answer : Context : [1] [2]"], "llama")


@pytest.fixture(scope="module")
def lookup_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lookup_model(tmp_path_factory.mktemp("lookup"))


def test_closed_book_cannot_learn_the_lookup(lookup_folder: Path) -> None:
    assert lookup_accuracy(lookup_folder, with_memory=False) <= 2 / LOOKUP


FUSIONS = {"in_context": {"fusion": "in_context"}, "kv": {"fusion": "kv"}, "gated": {"fusion": "gated"}}


@pytest.mark.parametrize("fusion", FUSIONS.values(), ids=FUSIONS.keys())
def test_every_fusion_mode_learns_the_lookup_from_the_chunks(fusion: dict, lookup_folder: Path) -> None:
    assert lookup_accuracy(lookup_folder, with_memory=True, fusion=fusion) >= LOOKUP_THRESHOLD


def _gated_model(folder: Path, per: str) -> RetroModel:
    base, tokenizer = load_base_model(str(folder))
    torch.manual_seed(0)
    fusion = {"fusion": "gated", "gate": per}
    return build_retro_model(base, tokenizer, "lora", LORA, fusion, 10, max_trainable_share=None)


@pytest.mark.parametrize("per", ["layer", "head"])
def test_a_fresh_memory_gate_is_the_base_model_without_retrieval(
    per: str, family_dirs: dict[str, Path], tmp_path: Path
) -> None:
    model = _gated_model(family_dirs["llama"], per)
    question, passages = _ids(model, QUESTIONS[0]), [[CHUNKS[0], CHUNKS[1]]]
    with torch.no_grad():
        gated = model(passages=passages, input_ids=question).logits
        with model.base_only():
            closed_book = model.model(input_ids=question).logits
        assert torch.allclose(gated, closed_book, atol=1e-5)
        model.fusion["memory_gate"].gate.fill_(0.5)
        opened = model(passages=passages, input_ids=question).logits
    assert not torch.allclose(opened, closed_book, atol=1e-3)
    model.save(tmp_path / "gated", {"base_model": str(family_dirs["llama"]), "method": "lora"})
    loaded = load_retro_model(tmp_path / "gated")
    with torch.no_grad():
        assert torch.allclose(loaded(passages=passages, input_ids=question).logits, opened, atol=1e-5)
    assert generate(loaded, QUESTIONS, 3, 2, [[c] for c in CHUNKS]) == generate(
        model, QUESTIONS, 3, 2, [[c] for c in CHUNKS]
    )


def test_a_memory_gate_needs_rotary_positions(family_dirs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="fusion gated needs a rotary-position model.*GPT2LMHeadModel"):
        _gated_model(family_dirs["gpt2"], "layer")
