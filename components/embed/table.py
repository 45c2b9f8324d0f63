"""The embedding table the embed stage writes: chunk ids, their vectors, and the embedder used.

Ids and vectors are written beside the old files and renamed into place, so an interrupted run
never leaves them out of step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from components.core.artifacts import write_json

IDS, VECTORS, MANIFEST = "ids.json", "vectors.npy", "manifest.json"


class EmbeddingTable:
    """Vectors by chunk id."""

    def __init__(self, ids: list[str], vectors: np.ndarray) -> None:
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
        self.ids, self.vectors = ids, vectors
        self._row = {cid: i for i, cid in enumerate(ids)}

    @classmethod
    def open(cls, folder: Path) -> EmbeddingTable:
        """The table written by the embed stage in `folder`."""
        folder = Path(folder)
        if not (folder / VECTORS).exists():
            raise FileNotFoundError(f"{folder} is missing: run the embed stage first")
        return cls(json.loads((folder / IDS).read_text()), np.load(folder / VECTORS))

    @staticmethod
    def manifest(folder: Path) -> dict[str, Any]:
        """What the embed stage recorded with the table in `folder` (the embedder among it)."""
        path = Path(folder) / MANIFEST
        return json.loads(path.read_text()) if path.exists() else {}

    @classmethod
    def reusable(cls, folder: Path, embedder: str) -> dict[str, np.ndarray]:
        """Vectors of the previous run in `folder` when it used the same embedder, by chunk id."""
        if cls.manifest(folder).get("embedder") != embedder:
            return {}
        try:
            table = cls.open(folder)
        except (OSError, ValueError):
            return {}
        return dict(zip(table.ids, table.vectors, strict=True))

    def __contains__(self, chunk_id: str) -> bool:
        return chunk_id in self._row

    def rows(self, chunk_ids: list[str]) -> np.ndarray:
        """The vectors of these chunks, in this order."""
        return self.vectors[[self._row[c] for c in chunk_ids]]

    @property
    def dim(self) -> int:
        """Dimension of the vectors."""
        return int(self.vectors.shape[1])

    def write(self, folder: Path, manifest: dict[str, Any]) -> None:
        """Write ids, vectors (float32) and the manifest (which names the embedder)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "vectors.tmp.npy").open("wb") as fh:
            np.save(fh, self.vectors.astype(np.float32))
        (folder / "ids.tmp.json").write_text(json.dumps(self.ids))
        (folder / "vectors.tmp.npy").replace(folder / VECTORS)
        (folder / "ids.tmp.json").replace(folder / IDS)
        write_json(folder / MANIFEST, manifest)
