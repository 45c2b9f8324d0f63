"""FAISS backend: any index factory string, an id map for upsert/delete, snapshots on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from components.stores.base import STORES, Hit, matches


@STORES.register("faiss")
class FaissStore:
    """String ids and payloads over a FAISS index built from a factory string (inner product)."""

    def __init__(self, dim: int, factory: str = "Flat", path: str | None = None) -> None:
        self.dim = dim
        self.factory = factory
        self.index = faiss.IndexIDMap2(faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT))
        self._int_of: dict[str, int] = {}
        self._str_of: dict[int, str] = {}
        self._payloads: dict[str, dict[str, Any]] = {}
        self._next = 0
        if path and (Path(path) / "faiss.index").exists():
            self._load(Path(path))

    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must be (n, {self.dim}), got {vectors.shape}")
        if not len(ids) == len(vectors) == len(payloads):
            raise ValueError("ids, vectors and payloads must have the same length")
        self.delete([i for i in ids if i in self._int_of])
        if not self.index.is_trained:
            self.index.train(vectors)
        int_ids = np.arange(self._next, self._next + len(ids), dtype=np.int64)
        self._next += len(ids)
        self.index.add_with_ids(vectors, int_ids)
        for sid, iid, payload in zip(ids, int_ids.tolist(), payloads, strict=True):
            self._int_of[sid], self._str_of[iid], self._payloads[sid] = iid, sid, dict(payload)

    def delete(self, ids: list[str]) -> None:
        known = [self._int_of.pop(i) for i in ids if i in self._int_of]
        if known:
            self.index.remove_ids(np.asarray(known, dtype=np.int64))
        for iid in known:
            self._payloads.pop(self._str_of.pop(iid), None)

    def search(self, queries: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[list[Hit]]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self.count() == 0:
            return [[] for _ in range(len(queries))]
        params = None
        if where:
            allowed = [self._int_of[s] for s, p in self._payloads.items() if matches(p, where)]
            if not allowed:
                return [[] for _ in range(len(queries))]
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64)))
        k_eff = min(k, self.count())
        scores, int_ids = self.index.search(queries, k_eff, params=params)
        results = []
        for row_scores, row_ids in zip(scores, int_ids, strict=True):
            hits = [
                Hit(self._str_of[i], float(s), self._payloads[self._str_of[i]])
                for s, i in zip(row_scores.tolist(), row_ids.tolist(), strict=True)
                if i >= 0
            ]
            results.append(hits)
        return results

    def count(self) -> int:
        return len(self._int_of)

    def ids(self) -> list[str]:
        return list(self._int_of)

    def payload(self, id: str) -> dict[str, Any] | None:
        return self._payloads.get(id)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(folder / "faiss.index"))
        meta = {
            "dim": self.dim,
            "factory": self.factory,
            "next": self._next,
            "ids": [[s, i] for s, i in self._int_of.items()],
        }
        (folder / "faiss_meta.json").write_text(json.dumps(meta))
        with (folder / "payloads.jsonl").open("w") as fh:
            for sid, payload in self._payloads.items():
                fh.write(json.dumps({"id": sid, "payload": payload}) + "\n")

    def _load(self, folder: Path) -> None:
        meta = json.loads((folder / "faiss_meta.json").read_text())
        if meta["dim"] != self.dim:
            raise ValueError(f"snapshot at {folder} has dim {meta['dim']}, expected {self.dim}")
        self.factory, self._next = meta["factory"], meta["next"]
        self.index = faiss.read_index(str(folder / "faiss.index"))
        self._int_of = {s: i for s, i in meta["ids"]}
        self._str_of = {i: s for s, i in self._int_of.items()}
        for line in (folder / "payloads.jsonl").read_text().splitlines():
            record = json.loads(line)
            self._payloads[record["id"]] = record["payload"]
