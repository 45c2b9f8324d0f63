"""The chunk key/value store of the index (`index.chunk_kv`) and a kv adapter served from it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from components.adapters.base_model import load_base_model
from components.adapters.builder import build_retro_model
from components.adapters.kv_index import KVFolder, index_kv_store, maintain_index_kv, removed_texts
from components.embed.encoder import encode
from components.serving.answerer import Answerer
from components.serving.metrics import ServingMetrics
from components.stores.retriever import Retriever
from tests.fixtures.tiny_model import build_tiny_model

TEXTS = ["Zorvex is made by Talmir Labs .", "The Varnholt Act dates from 1999 .", "Quillan is in Norway ."]
QUESTION = "Who makes Zorvex ?"
EMBEDDER = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("llama"), [*TEXTS, QUESTION], "llama")


def test_precompute_encodes_each_chunk_once_frees_removed_ones_and_models_read_it(
    llama: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "kv"
    store = index_kv_store(str(llama), "float32", 64, folder, budget_gb=1)
    first = maintain_index_kv(store, TEXTS[:2], [], precompute=True)
    assert (first["encoded"], first["present"], first["entries"]) == (2, 0, 2)
    assert first["bytes_per_chunk"] > 0 and first["disk_bytes"] == 2 * first["bytes_per_chunk"]
    again = maintain_index_kv(store, TEXTS[:2], [], precompute=True)  # an unchanged version
    assert (again["encoded"], again["present"]) == (0, 2)
    gone = removed_texts(TEXTS[:2], TEXTS[1:])  # the next version drops the first chunk
    assert gone == [TEXTS[0]]
    second = maintain_index_kv(store, TEXTS[1:], gone, precompute=True)
    assert (second["forgotten"], second["encoded"], second["present"], second["entries"]) == (1, 1, 1, 2)
    lazy = maintain_index_kv(store, [], [TEXTS[2]], precompute=False)  # lazy: frees, encodes nothing
    assert (lazy["forgotten"], lazy["entries"]) == (1, 1) and "encoded" not in lazy

    # an adapter over the same base model finds the index's entries on disk: nothing recomputed
    base, tokenizer = load_base_model(str(llama))
    fusion = {"fusion": "kv", "chunk_tokens": 64}
    model = build_retro_model(base, tokenizer, "lora", {"r": 2}, fusion, max_trainable_share=None)
    KVFolder(folder, 1).attach(model)
    model.chunk_key_values([TEXTS[1]])
    assert model.kv_store.counters.as_dict() == {
        "ram_hits": 0,
        "disk_hits": 1,
        "computed": 0,
        "disk_evictions": 0,
    }


def test_a_kv_adapter_is_served_with_question_only_prefill_streaming_and_counters(
    llama: Path, tmp_path: Path
) -> None:
    ids, payloads = ["c1", "c2", "c3"], [{"doc_id": d} for d in ("a", "b", "c")]
    Retriever.build(ids, TEXTS, encode(TEXTS, EMBEDDER), payloads, EMBEDDER).save(tmp_path / "index")
    base, tokenizer = load_base_model(str(llama))
    torch.manual_seed(0)
    model = build_retro_model(base, tokenizer, "lora", {"r": 2}, {"fusion": "gated", "gate": "head"},
                              max_trainable_share=None)  # fmt: skip
    with torch.no_grad():
        model.fusion["memory_gate"].gate.fill_(0.5)  # open, so the chunks change the answer
    model.save(tmp_path / "adapter", {"base_model": str(llama), "method": "lora", "retrieval": {"k": 2}})
    answerer = Answerer(tmp_path / "adapter", tmp_path / "index", kv_folder=KVFolder(tmp_path / "kv", 1))
    assert answerer.prefixes is None  # no prompt-prefix cache: the passages are not in the prompt

    answer = answerer.answer(QUESTION, max_new_tokens=4)
    hits = answerer.retrieve([QUESTION], 2)[0]
    prompt, texts = answerer.prompt(QUESTION, hits)
    assert not any(t in prompt for t in texts)  # only the question is prefilled
    with ThreadPoolExecutor(1) as executor:
        streamed = "".join(answerer.stream(prompt, texts, 4, executor))
    assert streamed.strip() == answer["answer"]
    assert answerer.chunk_kv_counters() == {"ram_hits": 2, "disk_hits": 0, "computed": 2, "disk_evictions": 0}
    assert len(list((tmp_path / "kv").glob("*/*.safetensors"))) == 2

    metrics = ServingMetrics()
    metrics.show_chunk_kv(answerer.chunk_kv_counters())
    assert 'retro_chunk_kv_lookups{tier="computed"} 2.0' in metrics.exposition().decode()

    cited = answer["sources"][0]["doc_id"]
    assert answerer.forget(frozenset({cited})) == 1  # forgetting a document frees its chunk's entry
    assert len(list((tmp_path / "kv").glob("*/*.safetensors"))) == 1
