"""int8 decode weights for the torch engine (`serve.torch.decode_weights`,
components/adapters/int8_decode.py): prompts keep the float weights exactly, one-token steps read
int8 weights and stay close to the float ones, adapters and the memory gate still act, and the
served versions' cache scope says which weights answered."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from components.adapters.base_model import load_base_model
from components.adapters.builder import build_retro_model
from components.adapters.int8_decode import Int8DecodeLinear, use_int8_decode
from components.adapters.retro_model import unwrap

LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}
IA3 = {"target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]}
PROMPT = "Zorvex is made by Orbell Works . Who makes Zorvex ?"
STEP_TOLERANCE = 0.75
"""How far an int8 step's logits may sit from the float step's on the tiny models: measured up to
0.54 (IA3, which scales the rounded features), with logits of standard deviation 1.5 to 1.8.
Their random weights are ten times the usual size, and int8 weights and bfloat16 products each
add about half of the gap. The adapter, the chunks and the open gate each move the logits by 2.5
to 6; a layer that lost its scale moves them by far more."""


def _model(tiny_model: Path, method: str = "lora", fusion: str = "in_context"):  # noqa: ANN202
    torch.manual_seed(0)  # the same adapter at every call
    base, tokenizer = load_base_model(str(tiny_model))
    config = dict(LORA if method == "lora" else IA3)
    model = build_retro_model(base, tokenizer, method, config, {"fusion": fusion}, max_trainable_share=None)
    torch.manual_seed(3)
    with torch.no_grad():  # trained-looking adapter and gate: they must still act after the swap
        for name, param in model.named_parameters():
            if "gate" in name:
                param.fill_(1.0)  # open: the chunks weigh as much as the question's own tokens
            elif any(part in name for part in ("lora_", "ia3_")):
                param.add_(torch.randn_like(param) * 0.3)
    return model.eval()


class _Recorder(StoppingCriteria):
    """Keeps each step's next-token logits; never stops generation."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
        last = scores[-1] if isinstance(scores, tuple) else scores  # transformers: every step so far
        self.steps.append(last.reshape(last.shape[0], -1)[0].float().clone())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def _greedy_steps(model, passages: list[list[str]] | None = None, steps: int = 4) -> list[torch.Tensor]:  # noqa: ANN001
    """The next-token logits of each greedy step, as the engine decodes (prompt, then one token
    at a time with the cache; chunks as key/values for kv and gated)."""
    batch = model.tokenizer([PROMPT], return_tensors="pt", add_special_tokens=False)
    recorder = _Recorder()
    with torch.inference_mode():
        model.generate(
            passages=passages,
            **batch,
            max_new_tokens=steps,
            do_sample=False,
            stopping_criteria=StoppingCriteriaList([recorder]),
            eos_token_id=None,
            output_scores=True,  # transformers hands the criteria the logits only then
            return_dict_in_generate=True,
        )
    return recorder.steps


def _prompt_logits(model) -> torch.Tensor:  # noqa: ANN001
    ids = model.tokenizer([PROMPT], return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        return model(input_ids=ids).logits[0]


def _largest_gap(full: list[torch.Tensor], int8: list[torch.Tensor]) -> tuple[float, int]:
    """The largest logit gap over the steps where both decoded the same tokens so far, and how many."""
    gaps = []
    for a, b in zip(full, int8, strict=True):
        gaps.append((a - b).abs().max().item())
        if a.argmax() != b.argmax():
            break
    return max(gaps), len(gaps)


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_prompts_keep_float_weights_and_steps_stay_close(tiny_model: Path, method: str) -> None:
    model = _model(tiny_model, method)
    prompt_full, steps_full = _prompt_logits(model), _greedy_steps(model)
    with model.base_only():
        steps_base = _greedy_steps(model)
    swapped = use_int8_decode(model)
    layers = len(unwrap(model.model).model.layers)
    assert swapped == 7 * layers + 1  # every projection of every layer, and the output layer
    adapter_layers = [m for n, m in model.named_modules() if "lora_" in n or "ia3_" in n]
    assert not any(isinstance(m, Int8DecodeLinear) for m in adapter_layers)
    assert torch.equal(_prompt_logits(model), prompt_full)  # prompts run on the float weights
    steps_int8 = _greedy_steps(model)
    gap, compared = _largest_gap(steps_full, steps_int8)
    assert compared >= 2 and 0 < gap < STEP_TOLERANCE, (gap, compared)  # int8 ran, and rounds only
    with model.base_only():
        steps_base_int8 = _greedy_steps(model)
    assert _largest_gap(steps_base, steps_base_int8)[0] < STEP_TOLERANCE
    assert (steps_int8[0] - steps_base_int8[0]).abs().max().item() > 3 * STEP_TOLERANCE  # the adapter acts


@pytest.mark.parametrize("fusion", ["kv", "gated"])
def test_fusion_over_chunk_key_values_decodes_on_int8(tiny_model: Path, fusion: str) -> None:
    model = _model(tiny_model, fusion=fusion)
    passages = [["Zorvex is made by Orbell Works .", "Quillan is in Norway ."]]
    chunks_full = model.chunk_key_values(passages[0])
    steps_full, steps_closed = _greedy_steps(model, passages), _greedy_steps(model, [[]])
    model = _model(tiny_model, fusion=fusion)  # the same model, with nothing encoded yet
    use_int8_decode(model)
    for full, int8 in zip(chunks_full, model.chunk_key_values(passages[0]), strict=True):
        assert all(torch.equal(a, b) for a, b in zip(full.keys, int8.keys, strict=True))  # float weights
    gap, compared = _largest_gap(steps_full, _greedy_steps(model, passages))
    assert compared >= 2 and 0 < gap < STEP_TOLERANCE, (gap, compared)
    assert (steps_full[0] - steps_closed[0]).abs().max().item() > 3 * STEP_TOLERANCE  # the chunks matter


def test_greedy_answers_on_int8_match_float_where_the_margin_allows(tiny_model: Path) -> None:
    from components.adapters.generation import generate

    model = _model(tiny_model)
    prompts = [PROMPT, "Quillan is in Norway . Where is Quillan ?", "The Varnholt Act dates from 2004 ."]
    full = generate(model, prompts, max_new_tokens=6)
    use_int8_decode(model)
    int8 = generate(model, prompts, max_new_tokens=6)
    assert len(int8) == len(full) and all(isinstance(a, str) for a in int8)
    assert sum(a == b for a, b in zip(full, int8, strict=True)) >= 2, (full, int8)


def test_training_mode_and_gradients_use_float_weights() -> None:
    linear = nn.Linear(32, 16)
    layer = Int8DecodeLinear(linear)
    x = torch.randn(2, 1, 32, requires_grad=True)
    assert torch.equal(layer(x), linear(x))  # gradients enabled: the float layer, differentiable
    with torch.inference_mode():
        step = layer(x.detach())
        assert not torch.equal(step, linear(x.detach()))
        assert torch.allclose(step, linear(x.detach()), atol=0.05)


def test_a_gated_adapter_is_served_on_int8_with_its_own_cache_scope(tiny_model: Path, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from components.adapters.kv_index import KVFolder
    from components.core.serve_params import TorchEngineSettings
    from components.embed.encoder import encode
    from components.serving.answerer import Answerer
    from components.stores.retriever import Retriever

    texts = [
        "Zorvex is made by Orbell Works .",
        "Quillan is in Norway .",
        "The Varnholt Act dates from 2004 .",
    ]
    payloads = [{"doc_id": d} for d in "abc"]
    Retriever.build(
        ["c1", "c2", "c3"], texts, encode(texts, "all-MiniLM-L6-v2"), payloads, "all-MiniLM-L6-v2"
    ).save(tmp_path / "index")
    model = _model(tiny_model, fusion="gated")
    model.save(tmp_path / "adapter", {"base_model": str(tiny_model), "method": "lora", "retrieval": {"k": 2}})
    int8 = TorchEngineSettings(decode_weights="int8")
    served = Answerer(
        tmp_path / "adapter", tmp_path / "index", kv_folder=KVFolder(tmp_path / "kv", 1), torch_engine=int8
    )
    assert sum(isinstance(m, Int8DecodeLinear) for m in served.model.modules()) > 0
    assert served.cache_scope[0] == "local@torch-int8"  # cached answers of the float engine are not reused
    answer = served.answer("Who makes Zorvex ?", max_new_tokens=4)
    prompt, passages = served.prompt("Who makes Zorvex ?", served.retrieve(["Who makes Zorvex ?"], 2)[0])
    with ThreadPoolExecutor(1) as executor:
        assert "".join(served.stream(prompt, passages, 4, executor)).strip() == answer["answer"]

    full = Answerer(tmp_path / "adapter", tmp_path / "index", kv_folder=KVFolder(tmp_path / "kv", 1))
    assert full.cache_scope[0] == "local"
    full.answer(
        "Who makes Zorvex ?", max_new_tokens=4
    )  # the chunks int8 served were encoded on float weights
    assert full.chunk_kv_counters()["computed"] == 0 and full.chunk_kv_counters()["disk_hits"] == 2
