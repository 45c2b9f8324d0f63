"""The ONNX embedding engine (`embed.backend: onnx`, `embed.quantize: int8`) on the packaged
MiniLM: its vectors against sentence-transformers on torch, the export cache, and an index
embedded with it whose queries go through the same engine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from components.core.config import load_params_file, set_dotted
from components.core.params import EmbedParams
from components.core.paths import Paths
from components.data.synthetic import DOMAINS, KnowledgeBase
from components.embed.encoder import encode
from components.embed.onnx_backend import CACHE_ENV, MODEL_FILE, exported_folder
from components.stages import chunk, embed, index, ingest
from components.stores.retriever import Retriever
from tests.conftest import ROOT, run_stage

TEXTS = [
    "What is the incubation period of COVID-19?",
    "Rhoquin-137 is dosed at 12.5 mg twice a day.",
    "short",
    "A long passage about coronaviruses, their spike proteins and how vaccines target them. " * 12,
]
FLOAT_COSINE = 0.9999  # float32 ONNX against torch: the same model, other kernels
INT8_COSINE = 0.97  # int8 weights (per-channel dynamic quantization), a short text padded beside a long one


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path_factory.getbasetemp() / "onnx-cache"  # shared by this module's tests: one export each
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_onnx_vectors_match_torch_and_the_export_is_cached(onnx_cache: Path) -> None:
    reference = encode(TEXTS)
    exact, quantized = encode(TEXTS, backend="onnx"), encode(TEXTS, backend="onnx-int8")
    assert exact.shape == quantized.shape == reference.shape and exact.dtype == np.float32
    assert _cosines(exact, reference).min() >= FLOAT_COSINE
    assert INT8_COSINE <= _cosines(quantized, reference).min() < FLOAT_COSINE  # really quantized
    assert np.allclose(np.linalg.norm(quantized, axis=1), 1.0, atol=1e-5)
    folder = exported_folder("all-MiniLM-L6-v2", "onnx")
    stamp = (folder / MODEL_FILE).stat().st_mtime_ns
    assert exported_folder("all-MiniLM-L6-v2", "onnx") == folder  # cached by content hash
    assert (folder / MODEL_FILE).stat().st_mtime_ns == stamp
    assert sorted(p.name.split("-", 1)[1] for p in onnx_cache.iterdir()) == ["onnx-int8-v2", "onnx-v2"]
    fused = json.loads((folder / "export.json").read_text())["fused"]
    assert fused.get("Attention") == 6 and fused.get("SkipLayerNormalization") == 12  # MiniLM's 6 blocks
    assert encode([], backend="onnx").shape == (0, reference.shape[1])


def test_int8_without_onnx_is_refused_with_the_key() -> None:
    with pytest.raises(ValidationError, match="embed.quantize"):
        EmbedParams(backend="torch", quantize="int8")


def test_an_index_embedded_with_onnx_embeds_queries_with_it(tmp_path: Path) -> None:
    source = tmp_path / "corpus"
    kb = KnowledgeBase(seed=3)
    for domain in DOMAINS[:2]:
        kb.add_entities(domain.name, 4)
    kb.write(source / "v1")
    params = load_params_file(ROOT / "params.yaml")
    for key, value in {
        "ingest.source": str(source),
        "index.store_params": {"factory": "Flat"},
        "retrieval.finetune": "off",
        "embed.backend": "onnx",
        "embed.quantize": "int8",
    }.items():
        set_dotted(params, key, value)
    layout = Paths(tmp_path)
    embedded = [run_stage(stage, params, layout.root) for stage in (ingest, chunk, embed)][-1]
    built = run_stage(index, params, layout.root)
    assert embedded["embed_backend"] == built["embed_backend"] == "onnx-int8"
    assert embedded["embedder"] == built["embedder"] == "all-MiniLM-L6-v2@onnx-int8"
    retriever = Retriever.load(layout.index)
    assert retriever.embed_backend == "onnx-int8"
    questions = ["What is the dosage?", "Which company makes it?"]
    queries = retriever.embed(questions)
    assert np.array_equal(queries, encode(questions, backend="onnx-int8"))
    assert not np.array_equal(queries, encode(questions))
    retriever.close()
    # back to torch: vectors of another engine are never mixed in, so all is embedded and built anew
    set_dotted(params, "embed.backend", "torch")
    set_dotted(params, "embed.quantize", "none")
    again = run_stage(embed, params, layout.root)
    assert again["reused"] == 0 and again["embedded"] == again["chunks"] and again["embed_backend"] == "torch"
    rebuilt = run_stage(index, params, layout.root)
    assert rebuilt["update"]["mode"] == "full" and rebuilt["embed_backend"] == "torch"
    assert rebuilt["index_version"] == built["index_version"] + 1
    shutil.rmtree(layout.index)
