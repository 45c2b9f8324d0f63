"""Retrieval over a vector store: dense, BM25 (bm25s) or both fused by reciprocal rank."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from components.embed.encoder import encode
from components.stores.base import STORES, Hit, VectorStore, matches

MODES = ("dense", "bm25", "hybrid")


def reciprocal_rank_fusion(rankings: list[list[Hit]], k: int, rrf_k: int = 60) -> list[Hit]:
    """Fuse ranked lists: score(d) = sum over lists of 1 / (rrf_k + rank)."""
    scores: dict[str, float] = {}
    payloads: dict[str, dict[str, Any]] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (rrf_k + rank)
            payloads.setdefault(hit.id, hit.payload)
    best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [Hit(i, s, payloads[i]) for i, s in best]


class Retriever:
    """Answers `retrieve(queries, k)` from a store plus an optional BM25 index of the same chunks."""

    def __init__(
        self,
        store: VectorStore,
        embedder: str,
        mode: str = "hybrid",
        rrf_k: int = 60,
        bm25: Any = None,
        bm25_ids: list[str] | None = None,
        store_kind: str = "faiss",
        store_params: dict[str, Any] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"retrieval mode must be one of {MODES}, got {mode!r}")
        if mode != "dense" and bm25 is None:
            raise ValueError(f"retrieval mode {mode!r} needs a BM25 index")
        self.store, self.embedder, self.mode, self.rrf_k = store, embedder, mode, rrf_k
        self.bm25, self.bm25_ids = bm25, bm25_ids or []
        self.store_kind, self.store_params = store_kind, store_params or {}

    @classmethod
    def build(
        cls,
        ids: list[str],
        texts: list[str],
        vectors: np.ndarray,
        payloads: list[dict[str, Any]],
        embedder: str,
        mode: str = "hybrid",
        rrf_k: int = 60,
        store: str = "faiss",
        store_params: dict[str, Any] | None = None,
    ) -> Retriever:
        """Index chunks: vectors go to the store, texts to BM25 (unless mode is dense)."""
        store_params = dict(store_params or {})
        backend = STORES.build(store, dim=vectors.shape[1], **store_params)
        backend.upsert(ids, vectors, [{**p, "text": t} for p, t in zip(payloads, texts, strict=True)])
        bm25 = _build_bm25(texts) if mode != "dense" and texts else None
        return cls(
            backend,
            embedder,
            mode if texts else "dense",
            rrf_k,
            bm25,
            list(ids),
            store,
            store_params,
        )

    def retrieve(self, queries: list[str], k: int, where: dict[str, Any] | None = None) -> list[list[Hit]]:
        """Top-k hits per query; payloads carry the chunk text and its document id."""
        depth = k if self.mode == "dense" else max(4 * k, 20)
        dense = [[] for _ in queries]
        if self.mode != "bm25":
            dense = self.store.search(encode(queries, self.embedder), depth, where)
        if self.mode == "dense":
            return [hits[:k] for hits in dense]
        sparse = self._bm25_search(queries, depth, where)
        if self.mode == "bm25":
            return [hits[:k] for hits in sparse]
        return [reciprocal_rank_fusion([d, s], k, self.rrf_k) for d, s in zip(dense, sparse, strict=True)]

    def _bm25_search(self, queries: list[str], depth: int, where: dict[str, Any] | None) -> list[list[Hit]]:
        tokens = _bm25s().tokenize(queries, stopwords="en", return_ids=False, show_progress=False)
        n = min(depth, len(self.bm25_ids))
        docs, scores = self.bm25.retrieve(tokens, k=n, show_progress=False, n_threads=1)
        results = []
        for row_docs, row_scores in zip(docs, scores, strict=True):
            hits = []
            for j, score in zip(row_docs.tolist(), row_scores.tolist(), strict=True):
                if score <= 0:
                    continue
                sid = self.bm25_ids[j]
                payload = self.store.payload(sid)
                if payload is not None and matches(payload, where):
                    hits.append(Hit(sid, float(score), payload))
            results.append(hits)
        return results

    def save(self, folder: Path) -> None:
        """Write a self-contained snapshot: store files, BM25 index and retriever settings."""
        folder = Path(folder)
        self.store.save(folder / "store")
        if self.bm25 is not None:
            self.bm25.save(str(folder / "bm25"))
            (folder / "bm25_ids.json").write_text(json.dumps(self.bm25_ids))
        settings = {
            "embedder": self.embedder,
            "mode": self.mode,
            "rrf_k": self.rrf_k,
            "store": self.store_kind,
            "store_params": self.store_params,
            "dim": self.store.dim,
        }
        (folder / "retriever.json").write_text(json.dumps(settings, indent=2))

    @classmethod
    def load(cls, folder: Path, mode: str | None = None) -> Retriever:
        """Open a snapshot written by `save`; `mode` may narrow hybrid to dense or bm25."""
        bm25s = _bm25s()
        folder = Path(folder)
        settings = json.loads((folder / "retriever.json").read_text())
        store = STORES.build(
            settings["store"],
            dim=settings["dim"],
            path=str(folder / "store"),
            **settings["store_params"],
        )
        bm25 = bm25_ids = None
        if (folder / "bm25").exists():
            bm25 = bm25s.BM25.load(str(folder / "bm25"))
            bm25_ids = json.loads((folder / "bm25_ids.json").read_text())
        return cls(
            store,
            settings["embedder"],
            mode or settings["mode"],
            settings["rrf_k"],
            bm25,
            bm25_ids,
            settings["store"],
            settings["store_params"],
        )


def _bm25s():  # noqa: ANN202
    """Import bm25s, which sets its own logger to DEBUG on import, and quiet it."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def _build_bm25(texts: list[str]):  # noqa: ANN202
    bm25s = _bm25s()
    bm25 = bm25s.BM25()
    bm25.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    return bm25
