"""The VectorStore protocol every backend implements, and the backend registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from components.plugins import Registry


@dataclass(frozen=True)
class Hit:
    """One search result: the stored id, its similarity score and its payload."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


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


@runtime_checkable
class VectorStore(Protocol):
    """What every backend offers; stages and the retriever use only this."""

    dim: int

    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None: ...

    def delete(self, ids: list[str]) -> None: ...

    def search(self, queries: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[list[Hit]]: ...

    def count(self) -> int: ...

    def ids(self) -> list[str]: ...

    def payload(self, id: str) -> dict[str, Any] | None: ...

    def save(self, folder: Path) -> None: ...


STORES: Registry[VectorStore] = Registry("vector store")
