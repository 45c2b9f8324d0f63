"""The manifest of an index version: what it was built from, its parent, and what changed.

One writer for every index snapshot (the index stage, tests, benchmarks). Its schema version is
checked on every read: a snapshot written by another version of Retro-PEFT is rebuilt by the
index stage and refused by every other reader, never misread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from components.core.artifacts import check_schema

MANIFEST = "manifest.json"
INDEX_SCHEMA = 2  # 2: BM25 terms keep identifiers whole; fusion weights

COMPATIBILITY_KEYS = ("embedder", "dim", "store", "store_params", "retrieval_mode", "chunking")
"""Fields that must match for a new version to be built as an update of the previous one."""


class IndexManifest(BaseModel):
    """One index version; `content_hash` identifies the set of chunks it holds."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = INDEX_SCHEMA
    content_hash: str
    embedder: str  # the base embedder's name, or `name+finetuned@hash` (the snapshot holds it)
    dim: int
    store: str
    retrieval_mode: str
    count: int
    documents: int
    corpus_version: str
    corpus_source: str | None = None
    store_params: dict[str, Any] = Field(default_factory=dict)
    chunking: dict[str, Any] = Field(default_factory=dict)
    index_version: int = 1
    parent: dict[str, Any] | None = None
    update: dict[str, Any] = Field(default_factory=lambda: {"mode": "full"})
    store_info: dict[str, Any] = Field(default_factory=dict)
    embedder_hash: str | None = None  # content hash of the fine-tuned embedder in the snapshot
    embed_backend: str = "torch"  # the engine that made the vectors (embed.backend); queries use it too
    fusion: dict[str, Any] = Field(default_factory=dict)  # hybrid weights and how they were fitted
    rerank: dict[str, Any] = Field(default_factory=dict)  # the reranker: trained, kept or not, and why

    @classmethod
    def read(cls, folder: Path) -> IndexManifest:
        """The manifest of the snapshot in `folder`; SchemaMismatch when another schema wrote it."""
        path = Path(folder) / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run the index stage first")
        raw = json.loads(path.read_text())
        check_schema(
            raw.get("schema_version"),
            INDEX_SCHEMA,
            f"index snapshot {folder}",
            "rebuild it (`dvc repro -f index`)",
        )
        return cls.model_validate(raw)

    @classmethod
    def read_if_current(cls, folder: Path) -> IndexManifest | None:
        """The manifest on disk when it is readable and of this schema, else None (build anew)."""
        try:
            return cls.read(folder)
        except (OSError, ValueError, RuntimeError):
            return None

    def write(self, folder: Path) -> None:
        """Write the manifest as JSON into the index folder."""
        (Path(folder) / MANIFEST).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """The manifest as a plain dict."""
        return self.model_dump()

    def changed_settings(self, settings: dict[str, Any]) -> list[str]:
        """The compatibility fields whose value differs from `settings` (empty: an update is possible)."""
        return [k for k in COMPATIBILITY_KEYS if getattr(self, k) != settings[k]]
