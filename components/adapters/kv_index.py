"""The index's chunk key/value store (`index.chunk_kv`) for `kv` and `gated` fusion.

One folder (`paths.chunk_kv`) holds the chunk key/values of every index version, content-addressed
(components/adapters/kv_store.py), so a new index version adds only its new chunks. The index stage
fills it ahead of time (`precompute`) or leaves it to whoever reads a chunk first: training,
evaluation and the service (`lazy`). Chunks that leave the index with a new version are freed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from components.adapters import chunk_kv
from components.adapters.kv_store import KVStore, store_model_id
from components.adapters.precision import cpu_dtype
from components.core.params import PipelineParams

GB = 2**30


@dataclass(frozen=True)
class KVFolder:
    """Where chunk key/values are kept on disk (`paths.chunk_kv`) and within how many GB."""

    path: Path
    budget_gb: float

    def attach(self, model: Any) -> None:
        """Let a RetroModel read and fill the disk tier (a no-op for in_context fusion)."""
        if model.uses_memory:
            model.use_kv_folder(self.path, int(self.budget_gb * GB))


def index_kv_store(
    base_model: str, dtype: str, chunk_tokens: int, folder: Path, budget_gb: float, form: str = "auto"
) -> KVStore:
    """The store as the index stage uses it: the frozen base model encodes, `folder` keeps
    (entries in storage `form`, as the adapter's own store reads them)."""
    from components.adapters.base_model import load_base_model

    model, tokenizer = load_base_model(base_model, dtype)
    model.eval()

    def encode(texts: list[str]) -> list[chunk_kv.ChunkKV]:
        return chunk_kv.encode_chunk_kv(model, tokenizer, texts, chunk_tokens)

    weights = next(model.parameters()).dtype
    store = KVStore(store_model_id(model.config), chunk_tokens, encode, form, weights)
    store.use_folder(folder, int(budget_gb * GB))
    return store


def maintain_index_kv(
    store: KVStore, texts: list[str], removed: list[str], precompute: bool
) -> dict[str, Any]:
    """Free the chunks that left the index, then (with `precompute`) encode the new version's
    chunks the folder lacks; the counts, bytes per chunk and seconds."""
    started = time.perf_counter()
    report: dict[str, Any] = {"forgotten": store.forget(removed) if removed else 0}
    if precompute:
        report |= store.fill(texts)
    files, used = store.disk_entries()
    report |= {
        "entries": files,
        "disk_bytes": used,
        "bytes_per_chunk": round(used / files) if files else None,
        "budget_bytes": store.disk_bytes,
        "disk_evictions": store.counters.disk_evictions,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return report


def index_chunk_kv(
    params: PipelineParams, folder: Path, chunks: pd.DataFrame, part: pd.DataFrame, parent: Any
) -> dict[str, Any]:
    """The index stage's work on the store for kv and gated fusion (nothing for in_context): free
    the chunks of the `parent` index version that the new one's (`part`) lack and, with
    `index.chunk_kv: precompute`, encode the new ones; `{"chunk_kv": report}`."""
    fusion, p, model = params.adapter_train.fusion, params.index, params.model
    if fusion.fusion == "in_context":
        return {}
    texts = part["text"].tolist()
    before = chunks["version"] == (parent.corpus_version if parent is not None else None)
    previous = chunks.loc[before, "text"].tolist()
    store = index_kv_store(model.base, cpu_dtype(model.dtype), fusion.chunk_tokens, folder,
                           p.chunk_kv_budget_gb, fusion.chunk_kv_dtype)  # fmt: skip
    report = maintain_index_kv(store, texts, removed_texts(previous, texts), p.chunk_kv == "precompute")
    return {"chunk_kv": {"mode": p.chunk_kv, **report}}


def removed_texts(previous: list[str], current: list[str]) -> list[str]:
    """Texts of the previous index version that the current one no longer holds."""
    kept = set(current)
    return sorted({t for t in previous if t not in kept})
