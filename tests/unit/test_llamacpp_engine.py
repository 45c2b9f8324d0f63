"""The llama.cpp engine against the torch engine on tiny Llama models written to f32 GGUF: the same
greedy tokens with a LoRA, an AdaLoRA and an IA3 adapter, the same answers through the Answerer
with and without a reused passage prefix, and a clear refusal for fusion modes it cannot run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from components.adapters.base_model import load_base_model
from components.adapters.builder import build_retro_model, load_retro_model
from components.core.serve_params import LlamaCppSettings

pytest.importorskip("llama_cpp", reason="the llama.cpp engine needs the cpu-engine extra (make install)")

from components.serving.llamacpp_engine import (  # noqa: E402
    EngineUnavailable,
    LlamaCppEngine,
    amx_repacking_crashes,
    repack_weights,
)

F32 = LlamaCppSettings(weights="f32", kv_cache="f32", flash_attention=False, threads=1, context_tokens=512)
PROMPTS = [
    "Answer the question. Context: Zorvex is made by Orbell Works. Question: Who makes Zorvex? Answer:",
    "Quillan is in Norway . Where is Quillan ?",
    "The Varnholt Act dates from 2004 .",
]
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ADAPTERS = {
    "lora": {"r": 4, "lora_alpha": 8, "target_modules": ALL_LINEAR},
    "adalora": {
        "init_r": 4,
        "target_r": 4,
        "total_step": 10,
        "target_modules": ["q_proj", "k_proj", "v_proj"],
    },
    "ia3": {"target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]},
}


def _trained_looking(model, seed: int) -> None:  # noqa: ANN001
    """Move every adapter weight off its no-op initialisation, as training would."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.model.named_parameters():
            if any(part in name for part in ("lora_", "ia3_")):
                param.add_(torch.randn_like(param) * 0.3)


def _artifact(folder: Path, tiny_model: Path, method: str, fusion: dict | None = None) -> Path:
    base, tokenizer = load_base_model(str(tiny_model))
    model = build_retro_model(
        base, tokenizer, method, dict(ADAPTERS[method]), fusion, max_trainable_share=None
    )
    _trained_looking(model, seed=len(method))
    model.save(folder, {"base_model": str(tiny_model), "method": method, "retrieval": {"k": 2}})
    return folder


LOGIT_TOLERANCE = 0.01
"""How far llama.cpp's next-token logits may sit from torch's with f32 weights, an f32 key/value
cache and unfused attention (kernels sum in another order): under 0.001 on these models, against
5 to 10 between the adapted and the base model. An f16 cache or the fused kernel (f16 inside)
moves them by up to 0.3, enough to flip a near tie between two tokens on some CPUs."""


def _torch_logits(model, ids: list[int]) -> np.ndarray:  # noqa: ANN001
    with torch.inference_mode():
        return model.model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


def _llamacpp_logits(engine: LlamaCppEngine, ids: list[int]) -> np.ndarray:
    """llama.cpp's next-token logits after each of `ids`, fed one token at a time."""
    llm = engine.llm
    llm.reset()
    rows = []
    for token in ids:
        llm.eval([token])
        rows.append(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy())
    llm.reset()
    return np.stack(rows)


def _assert_same_greedy(model, prompt: str, engine_tokens: list[int], torch_tokens: list[int]) -> None:  # noqa: ANN001
    """The engine's greedy tokens are torch's, except that they may part where torch's two best
    tokens lie within twice the logit tolerance (a near tie that kernel rounding can flip)."""
    if engine_tokens == torch_tokens:
        return
    step = next(i for i, (a, b) in enumerate(zip(engine_tokens, torch_tokens, strict=False)) if a != b)
    ids = model.tokenizer(prompt, add_special_tokens=False)["input_ids"] + torch_tokens[:step]
    top_two = np.sort(_torch_logits(model, ids)[-1])[-2:]
    assert top_two[1] - top_two[0] < 2 * LOGIT_TOLERANCE, (step, engine_tokens, torch_tokens)


def _torch_tokens(model, prompt: str, n: int) -> list[int]:  # noqa: ANN001
    tokenizer = model.tokenizer
    inputs = tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    new = out[0, inputs["input_ids"].shape[1] :].tolist()
    return new[: new.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in new else new


@pytest.mark.parametrize("method", ["lora", "adalora", "ia3"])
def test_llamacpp_gives_the_torch_engines_tokens(
    method: str, tmp_path: Path, tiny_model: Path, monkeypatch
) -> None:  # noqa: ANN001
    monkeypatch.setenv("RETRO_GGUF_CACHE", str(tmp_path / "gguf"))
    folder = _artifact(tmp_path / method, tiny_model, method)
    model = load_retro_model(folder)
    engine = LlamaCppEngine(model, folder, F32)
    model_file, lora_file = engine.files
    assert (lora_file is None) == (method == "ia3")  # IA3 has no low-rank form: folded into a model
    with model.base_only():
        base_tokens = [_torch_tokens(model, p, 12) for p in PROMPTS]
    adapted = [_torch_tokens(model, p, 12) for p in PROMPTS]
    assert adapted != base_tokens  # the adapter changes the answers, so a dropped adapter would show
    for prompt, tokens in zip(PROMPTS, adapted, strict=True):
        ids = model.tokenizer(prompt, add_special_tokens=False)["input_ids"] + tokens
        torch_logits = _torch_logits(model, ids)
        with model.base_only():
            base_logits = _torch_logits(model, ids)
        gap = np.abs(_llamacpp_logits(engine, ids) - torch_logits).max()
        assert gap < LOGIT_TOLERANCE < np.abs(base_logits - torch_logits).max(), gap
        _assert_same_greedy(model, prompt, engine.answer_tokens(prompt, 12), tokens)


def test_quantized_weights_answer_where_amx_repacking_would_crash(
    tmp_path: Path, tiny_model: Path, monkeypatch
) -> None:  # noqa: ANN001
    """q8_0 weights repacked into AMX tiles segfault in llama.cpp's AMX matrix multiply (this tiny
    model included), so auto leaves them unpacked on such CPUs; elsewhere it repacks."""
    import llama_cpp

    monkeypatch.setenv("RETRO_GGUF_CACHE", str(tmp_path / "gguf"))
    assert repack_weights("auto", llama_cpp) is not amx_repacking_crashes(llama_cpp)
    assert repack_weights("on", llama_cpp) and not repack_weights("off", llama_cpp)
    folder = _artifact(tmp_path / "lora", tiny_model, "lora")
    model = load_retro_model(folder)
    engine = LlamaCppEngine(model, folder, LlamaCppSettings(weights="q8_0", threads=1, context_tokens=512))
    tokens = engine.answer_tokens(PROMPTS[0], 8)
    assert 0 < len(tokens) <= 8 and all(0 <= t < len(model.tokenizer) for t in tokens)


def test_answers_match_with_a_reused_passage_prefix(tmp_path: Path, tiny_model: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("RETRO_GGUF_CACHE", str(tmp_path / "gguf"))
    from components.adapters.prompting import build_prompt

    folder = _artifact(tmp_path / "lora", tiny_model, "lora")
    model = load_retro_model(folder)
    seen: list[bool] = []
    engine = LlamaCppEngine(model, folder, F32, prefix_entries=4, on_prefix=seen.append)
    passages = [["Zorvex is made by Orbell Works ."], ["Quillan is in Norway ."]]
    questions = ["Who makes Zorvex ?", "Where is Quillan ?", "Is Zorvex old ?"]
    prompts = [build_prompt(model.tokenizer, q, p) for p in passages for q in questions]
    expected = [_torch_tokens(model, p, 8) for p in prompts]
    expected_text = [
        model.tokenizer.decode(t, skip_special_tokens=True).strip().split("\n")[0].strip() for t in expected
    ]
    assert [engine.answer(p, 8) for p in prompts] == expected_text
    assert [engine.answer(p, 8) for p in reversed(prompts)] == expected_text[::-1]  # restored states
    assert seen[:3] == [False, True, True] and seen[3] is False and all(seen[6:])


@pytest.mark.parametrize("fusion", ["kv", "gated"])
def test_fusion_inside_attention_is_refused_with_the_reason(
    fusion: str,
    tmp_path: Path,
    tiny_model: Path,
    monkeypatch,  # noqa: ANN001
) -> None:
    monkeypatch.setenv("RETRO_GGUF_CACHE", str(tmp_path / "gguf"))
    folder = _artifact(tmp_path / fusion, tiny_model, "lora", {"fusion": fusion})
    with pytest.raises(EngineUnavailable, match=f"{fusion} fusion.*set serve.engine to torch"):
        LlamaCppEngine(load_retro_model(folder), folder, F32)


def test_export_gguf_writes_files_llama_cpp_runs(tmp_path: Path, tiny_model: Path, monkeypatch) -> None:  # noqa: ANN001
    from llama_cpp import Llama
    from typer.testing import CliRunner

    from components.cli.app import app

    monkeypatch.setenv("RETRO_GGUF_CACHE", str(tmp_path / "gguf"))
    folder = _artifact(tmp_path / "lora", tiny_model, "lora")
    result = CliRunner().invoke(app, ["export-gguf", str(folder), str(tmp_path / "out"), "--weights", "f32"])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(files) == 2 and "lora.gguf" in files and "llama-server -m" in result.output
    base = next(p for p in (tmp_path / "out").iterdir() if p.name != "lora.gguf")
    llm = Llama(str(base), lora_path=str(tmp_path / "out" / "lora.gguf"), n_ctx=128, verbose=False)
    model = load_retro_model(folder)
    ids = model.tokenizer(PROMPTS[1], add_special_tokens=False)["input_ids"]
    tokens = [t for _, t in zip(range(6), llm.generate(ids, temp=0.0), strict=False)]
    _assert_same_greedy(model, PROMPTS[1], tokens, _torch_tokens(model, PROMPTS[1], 6)[:6])
    refused = CliRunner().invoke(app, ["export-gguf", str(folder), str(tmp_path / "x"), "--weights", "f8"])
    assert refused.exit_code == 1 and "weights" in refused.output


def test_the_models_own_hyperparameters_reach_the_gguf(tmp_path: Path) -> None:
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    from components.adapters import gguf_export

    config = LlamaConfig(
        vocab_size=32,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=64,
    )
    tokenizer = type("T", (), {})  # only the vocabulary is read, through the tokenizer GGUF here
    model = LlamaForCausalLM(config)
    source = tmp_path / "tok.gguf"
    writer = gguf.GGUFWriter(str(source), "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(32)])
    writer.add_token_merges(["t 1"])
    gguf_export._finish(writer)
    out = gguf_export.write_model_gguf(model, tokenizer, tmp_path / "m.gguf", "f32", tokenizer_gguf=source)
    fields = gguf.GGUFReader(out).fields
    assert fields["llama.rope.freq_base"].contents() == 100000.0
    assert fields["llama.attention.head_count_kv"].contents() == 1
    assert fields["llama.attention.layer_norm_rms_epsilon"].contents() == pytest.approx(1e-5)
    config.rope_parameters = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}
    with pytest.raises(gguf_export.UnsupportedForGGUF, match="llama3 rotary scaling"):
        gguf_export.write_model_gguf(model, tokenizer, tmp_path / "n.gguf", "f32", tokenizer_gguf=source)
