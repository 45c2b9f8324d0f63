"""The VectorStore protocol every backend implements, and the backend registry."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from components.core.name_registry import Registry


@dataclass(frozen=True)
class Hit:
    """One search result: the stored id, its similarity score and its payload."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


def citation(hit: Hit) -> dict[str, Any]:
    """Where a retrieved passage comes from: its chunk and document ids, source file, page (None
    when the document has no pages), section heading path and the chunk's character span
    [start, end) in the document's text."""
    payload = hit.payload
    return {
        "chunk_id": hit.id,
        "doc_id": payload.get("doc_id"),
        "source": payload.get("source") or None,
        "page": payload.get("page") or None,
        "section": payload.get("section") or None,
        "span": [int(payload.get("start", 0) or 0), int(payload.get("end", 0) or 0)],
    }


def format_citation(cited: dict[str, Any]) -> str:
    """One line: `doc_id p.3 § Methods > Dosage [120:980]`."""
    page = f" p.{cited['page']}" if cited.get("page") else ""
    section = f" § {cited['section']}" if cited.get("section") else ""
    start, end = cited.get("span") or (0, 0)
    return f"{cited['doc_id']}{page}{section} [{start}:{end}]"


class StoreInputError(ValueError):
    """A batch a store refuses (wrong shape, NaN, duplicate ids); the store is left unchanged."""


class StoreUnavailable(ConnectionError):
    """A remote store could not be reached or refused the request."""


def check_batch(ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]], dim: int) -> np.ndarray:
    """Validate one upsert batch before anything is written; returns contiguous float32 vectors."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise StoreInputError(f"vectors must have shape (n, {dim}), got {tuple(vectors.shape)}")
    if not len(ids) == len(vectors) == len(payloads):
        raise StoreInputError(
            f"ids ({len(ids)}), vectors ({len(vectors)}) and payloads ({len(payloads)}) differ in length"
        )
    bad_rows = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad_rows):
        sample = ", ".join(repr(ids[i]) for i in bad_rows[:3])
        raise StoreInputError(f"{len(bad_rows)} vector(s) contain NaN or infinity, e.g. ids {sample}")
    seen: set[str] = set()
    duplicates = sorted({i for i in ids if i in seen or seen.add(i)})
    if duplicates:
        raise StoreInputError(f"duplicate ids in one batch: {duplicates[:5]}")
    if any(not isinstance(i, str) or not i for i in ids):
        raise StoreInputError("ids must be non-empty strings")
    return vectors


def upsert_in_batches(
    target: VectorStore, entries: Iterable[tuple[str, Any, dict[str, Any]]], batch: int
) -> None:
    """Upsert (id, vector, payload) entries into `target`, `batch` at a time (copying a store)."""
    ids: list[str] = []
    vectors: list[Any] = []
    payloads: list[dict[str, Any]] = []
    for rid, vector, payload in entries:
        ids.append(rid)
        vectors.append(vector)
        payloads.append(payload)
        if len(ids) == batch:
            target.upsert(ids, np.asarray(vectors, dtype=np.float32), payloads)
            ids, vectors, payloads = [], [], []
    if ids:
        target.upsert(ids, np.asarray(vectors, dtype=np.float32), payloads)


def matches(payload: dict[str, Any], where: dict[str, Any] | None) -> bool:
    """True when every key of `where` equals the payload's value (a list means any of)."""
    if not where:
        return True
    for key, wanted in where.items():
        value = payload.get(key)
        if isinstance(wanted, (list, tuple, set)):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True


def both(first: dict[str, Any] | None, second: dict[str, Any] | None) -> dict[str, Any] | None:
    """The filter admitting what both admit: a key in both keeps the values both allow."""
    if not first or not second:
        return first or second
    joined = dict(first)
    for key, wanted in second.items():
        if key not in joined:
            joined[key] = wanted
            continue
        mine = joined[key] if isinstance(joined[key], (list, tuple, set)) else [joined[key]]
        theirs = wanted if isinstance(wanted, (list, tuple, set)) else [wanted]
        joined[key] = [v for v in mine if v in theirs]
    return joined


@runtime_checkable
class VectorStore(Protocol):
    """What every backend offers; stages and the retriever use only this."""

    dim: int

    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        """Insert or replace vectors with their payloads under `ids`."""

    def delete(self, ids: list[str]) -> None:
        """Remove `ids`; unknown ids are ignored."""

    def search(self, queries: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[list[Hit]]:
        """The `k` nearest vectors of each query, optionally filtered on payload fields by `where`."""

    def count(self) -> int:
        """Number of stored vectors."""

    def ids(self) -> list[str]:
        """Every stored id."""

    def payload(self, id: str) -> dict[str, Any] | None:
        """The payload of `id`, or None."""

    def payloads(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Payloads of the known ids among `ids` (one round trip on servers)."""
        ...

    def save(self, folder: Path) -> None:
        """Persist the store into `folder` (local files, or a pointer to the server collection)."""

    def clone(self, folder: Path, name: str) -> VectorStore:
        """An independent copy to update into: `folder` for local files, `name` for server collections."""
        ...

    def info(self) -> dict[str, Any]:
        """Backend, location and size, recorded in index manifests."""
        ...

    def drop(self) -> None:
        """Delete what this store holds on a server (a discarded update); no-op for local files."""
        ...

    def close(self) -> None:
        """Release connections and files."""


STORES: Registry[VectorStore] = Registry("vector store")
