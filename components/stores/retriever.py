"""Retrieval over a vector store: dense, BM25 (bm25s) or both fused, by weighted reciprocal rank
or by a weighted sum of min-max normalised scores.

The fusion method and weights are fitted per index version on validation questions
(components/stores/fusion_fit.py) and saved with the snapshot, so serving fuses as the index
stage measured; BM25 terms keep identifiers whole (components/data/lexical.py).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from components.data.lexical import TOKENIZER, bm25s_module, build_bm25, tokenize_all
from components.embed.encoder import encode
from components.stores.base import STORES, Hit, VectorStore, both, matches

MODES = ("dense", "bm25", "hybrid")
SNAPSHOT_EMBEDDER = "embedder"
"""A fine-tuned embedder's folder inside an index snapshot: serving embeds queries with it."""
FUSION_METHODS = ("rrf", "score")
EQUAL_WEIGHTS = {"method": "rrf", "dense": 0.5, "bm25": 0.5}


def candidate_depth(k: int) -> int:
    """Hits taken from each half of a hybrid retriever before fusing them into the top k."""
    return max(4 * k, 20)


def _upsert(store: VectorStore, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
    store.upsert(ids, vectors, payloads)


def _top(scores: dict[str, float], payloads: dict[str, dict[str, Any]], k: int) -> list[Hit]:
    """The k best-scoring hits (ties by id, so fusion is deterministic)."""
    best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [Hit(i, s, payloads[i]) for i, s in best]


def reciprocal_rank_fusion(
    rankings: list[list[Hit]], k: int, rrf_k: int = 60, weights: list[float] | None = None
) -> list[Hit]:
    """Fuse ranked lists: score(d) = sum over lists of weight / (rrf_k + rank); weights default to 1."""
    scores: dict[str, float] = {}
    payloads: dict[str, dict[str, Any]] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings), strict=True):
        if weight <= 0:
            continue
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + weight / (rrf_k + rank)
            payloads.setdefault(hit.id, hit.payload)
    return _top(scores, payloads, k)


def score_fusion(rankings: list[list[Hit]], k: int, weights: list[float]) -> list[Hit]:
    """Fuse ranked lists by score: sum over lists of weight * min-max normalised score (a hit
    missing from a list adds 0), so a BM25 score far above the rest counts as such."""
    scores: dict[str, float] = {}
    payloads: dict[str, dict[str, Any]] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        if weight <= 0 or not ranking:
            continue
        values = [h.score for h in ranking]
        low, span = min(values), (max(values) - min(values)) or 1.0
        for hit in ranking:
            scores[hit.id] = scores.get(hit.id, 0.0) + weight * (hit.score - low) / span
            payloads.setdefault(hit.id, hit.payload)
    return _top(scores, payloads, k)


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
        weights: dict[str, float] | None = None,
    ) -> None:
        """`weights`: how hybrid fusion combines the halves ({"method": "rrf" | "score",
        "dense": w, "bm25": w}); equal-weight RRF when not given."""
        if mode not in MODES:
            raise ValueError(f"retrieval mode must be one of {MODES}, got {mode!r}")
        if mode != "dense" and bm25 is None:
            raise ValueError(f"retrieval mode {mode!r} needs a BM25 index")
        self.store, self.embedder, self.mode, self.rrf_k = store, embedder, mode, rrf_k
        self.bm25, self.bm25_ids = bm25, bm25_ids or []
        self.store_kind, self.store_params = store_kind, store_params or {}
        self.weights = dict(weights or EQUAL_WEIGHTS)
        self.reranker: Any = None  # a CrossEncoderReranker (components/stores/rerank.py) or None
        self.embed_backend = "torch"  # the engine that embedded the index (embed.backend): queries use it too

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
        folder: Path | None = None,
        name: str = "retro",
        fill: Callable[[VectorStore, list[str], np.ndarray, list[dict[str, Any]]], None] | None = None,
    ) -> Retriever:
        """Index chunks: vectors go to the store, texts to BM25 (unless mode is dense).

        `folder` is where a file-backed store keeps its data (the snapshot's `store/`), `name`
        the collection a server-backed store creates. `fill(store, ids, vectors, payloads)`
        replaces the single upsert into the new store (a sharded build).
        """
        store_params = dict(store_params or {})
        path = str(Path(folder) / "store") if folder is not None else None
        backend = STORES.build(store, dim=vectors.shape[1], path=path, name=name, **store_params)
        try:
            full = [{**p, "text": t} for p, t in zip(payloads, texts, strict=True)]
            (fill or _upsert)(backend, ids, vectors, full)
        except Exception:
            backend.drop()
            backend.close()
            raise
        return cls._with_bm25(backend, texts, ids, embedder, mode, rrf_k, store, store_params)

    @classmethod
    def _with_bm25(
        cls,
        backend: VectorStore,
        texts: list[str],
        ids: list[str],
        embedder: str,
        mode: str,
        rrf_k: int,
        store: str,
        store_params: dict[str, Any],
    ) -> Retriever:
        bm25 = build_bm25(texts) if mode != "dense" and texts else None
        return cls(backend, embedder, mode if texts else "dense", rrf_k, bm25, list(ids), store, store_params)

    def embed(self, queries: list[str]) -> np.ndarray:
        """Query vectors by the embedder and engine that embedded the index."""
        return encode(queries, self.embedder, backend=self.embed_backend)

    def update(
        self,
        folder: Path,
        name: str,
        ids: list[str],
        texts: list[str],
        payloads: list[dict[str, Any]],
        vector_of: Callable[[list[str]], np.ndarray],
    ) -> tuple[Retriever, dict[str, int]]:
        """A new retriever holding exactly `ids`, made from this one without touching it.

        The store is cloned (into `folder`/store, or a new server collection `name`), removed
        chunks are deleted and only new chunks are upserted, with vectors from `vector_of(new_ids)`;
        kept chunks whose payload changed (document metadata) get their payload rewritten.
        BM25 is rebuilt from the texts (no embedding involved). If anything fails, the clone is
        dropped and this retriever is unchanged.
        """
        before = set(self.store.ids())
        wanted = set(ids)
        removed = sorted(before - wanted)
        full = [{**p, "text": t} for p, t in zip(payloads, texts, strict=True)]
        new_rows = [i for i, cid in enumerate(ids) if cid not in before]
        kept_rows = [i for i, cid in enumerate(ids) if cid in before]
        stored = self.store.payloads([ids[i] for i in kept_rows])
        relabelled = [i for i in kept_rows if stored.get(ids[i]) != full[i]]  # same text, new metadata
        store = self.store.clone(Path(folder) / "store", name)
        try:
            store.delete(removed)
            rows = new_rows + relabelled
            if rows:
                # vectors of relabelled chunks come from the embed stage as well: nothing is re-encoded
                chosen = [ids[i] for i in rows]
                store.upsert(chosen, vector_of(chosen), [full[i] for i in rows])
        except Exception:
            store.drop()
            store.close()
            raise
        change = {
            "added": len(new_rows),
            "removed": len(removed),
            "kept": len(kept_rows),
            "payload_updated": len(relabelled),
        }
        retriever = self._with_bm25(
            store, texts, ids, self.embedder, self.mode, self.rrf_k, self.store_kind, self.store_params
        )
        retriever.weights, retriever.reranker = dict(self.weights), self.reranker
        retriever.embed_backend = self.embed_backend
        return retriever, change

    def close(self) -> None:
        """Close the vector store."""
        self.store.close()

    def retrieve(
        self,
        queries: list[str],
        k: int,
        where: dict[str, Any] | None = None,
        vectors: np.ndarray | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits per query; payloads carry the chunk text and its document id.

        `vectors` are the queries' embeddings when the caller already has them (a cache). With a
        reranker, the top RERANK_DEPTH first-stage hits are reordered by it."""
        if self.reranker is None:
            return self.first_stage(queries, k, where, vectors)
        from components.stores.rerank import RERANK_DEPTH

        first = self.first_stage(queries, max(k, RERANK_DEPTH), where, vectors)
        return [self.reranker.rerank(q, hits, k) for q, hits in zip(queries, first, strict=True)]

    def first_stage(
        self,
        queries: list[str],
        k: int,
        where: dict[str, Any] | None = None,
        vectors: np.ndarray | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits per query before any reranking: dense, BM25 or both fused."""
        depth = k if self.mode == "dense" else candidate_depth(k)
        dense, sparse = self.rankings(queries, depth, where, vectors)
        if self.mode == "dense":
            return [hits[:k] for hits in dense]
        if self.mode == "bm25":
            return [hits[:k] for hits in sparse]
        return [self.fuse(d, s, k) for d, s in zip(dense, sparse, strict=True)]

    def rankings(
        self,
        queries: list[str],
        depth: int,
        where: dict[str, Any] | None = None,
        vectors: np.ndarray | None = None,
    ) -> tuple[list[list[Hit]], list[list[Hit]]]:
        """(dense, BM25) rankings of `depth` hits per query, each empty where the mode has no such half."""
        dense: list[list[Hit]] = [[] for _ in queries]
        sparse: list[list[Hit]] = [[] for _ in queries]
        if self.mode != "bm25":
            dense = self.store.search(self.embed(queries) if vectors is None else vectors, depth, where)
        if self.mode != "dense":
            sparse = self._bm25_search(queries, depth, where)
        return dense, sparse

    def fuse(
        self, dense: list[Hit], sparse: list[Hit], k: int, weights: dict[str, float] | None = None
    ) -> list[Hit]:
        """The top k of one query's two rankings, fused with `weights` (default: this retriever's)."""
        w = weights or self.weights
        halves, by = [dense, sparse], [w["dense"], w["bm25"]]
        if w.get("method", "rrf") == "score":
            return score_fusion(halves, k, by)
        return reciprocal_rank_fusion(halves, k, self.rrf_k, by)

    def _bm25_search(self, queries: list[str], depth: int, where: dict[str, Any] | None) -> list[list[Hit]]:
        """BM25 hits per query; a query without a single term (only punctuation, control
        characters or zero-width spaces) has none (bm25s refuses such a query outright)."""
        tokens = tokenize_all(queries)
        termless = [row == [""] for row in tokens]
        results: list[list[Hit]] = [[] for _ in queries]
        asked = [i for i, empty in enumerate(termless) if not empty]
        if not asked:
            return results
        n = min(depth, len(self.bm25_ids))
        docs, scores = self.bm25.retrieve([tokens[i] for i in asked], k=n, show_progress=False, n_threads=0)
        for i, row_docs, row_scores in zip(asked, docs, scores, strict=True):
            hits = []
            pairs = zip(row_docs.tolist(), row_scores.tolist(), strict=True)
            ranked = [(self.bm25_ids[j], s) for j, s in pairs if s > 0]
            payloads = self.store.payloads([sid for sid, _ in ranked])
            for sid, score in ranked:
                payload = payloads.get(sid)
                if payload is not None and matches(payload, where):
                    hits.append(Hit(sid, float(score), payload))
            results[i] = hits
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
            "fusion": self.weights,
            "bm25_tokenizer": TOKENIZER,
            "embed_backend": self.embed_backend,
        }
        embedder = Path(self.embedder)
        if (embedder / "finetune.json").is_file():  # a fine-tuned embedder travels with its index
            _copy_folder(embedder, folder / SNAPSHOT_EMBEDDER)
            settings["embedder"] = SNAPSHOT_EMBEDDER
            settings["embedder_in_snapshot"] = True
        if self.reranker is not None:  # the reranker travels with its index too
            _copy_folder(Path(self.reranker.path), folder / "reranker")
            settings["reranker"] = True
        (folder / "retriever.json").write_text(json.dumps(settings, indent=2))

    @classmethod
    def load(cls, folder: Path, mode: str | None = None) -> Retriever:
        """Open a snapshot written by `save`; `mode` may narrow hybrid to dense or bm25."""
        bm25s = bm25s_module()
        folder = Path(folder)
        settings = json.loads((folder / "retriever.json").read_text())
        if (folder / "bm25").exists() and settings.get("bm25_tokenizer") != TOKENIZER:
            raise ValueError(
                f"the BM25 index in {folder} was tokenized by {settings.get('bm25_tokenizer', 'bm25s')!r}, "
                f"not {TOKENIZER!r}: rebuild it (`dvc repro -f index`)"
            )
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
        embedder = settings["embedder"]
        if settings.get("embedder_in_snapshot"):
            embedder = str(folder / SNAPSHOT_EMBEDDER)
        retriever = cls(
            store,
            embedder,
            mode or settings["mode"],
            settings["rrf_k"],
            bm25,
            bm25_ids,
            settings["store"],
            settings["store_params"],
            settings.get("fusion"),
        )
        retriever.embed_backend = settings.get("embed_backend", "torch")
        if settings.get("reranker"):
            from components.stores.rerank import CrossEncoderReranker

            retriever.reranker = CrossEncoderReranker(folder / "reranker")
        return retriever


def _copy_folder(source: Path, target: Path) -> None:
    """Copy a model folder into a snapshot (nothing to do when it is already there)."""
    if source.resolve() != target.resolve():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


def _within_scope(method: str) -> Callable[..., list[list[Hit]]]:
    """`Retriever.<method>(queries, k, where, vectors)` with the filter joined to the scope."""

    def call(
        self: ScopedRetriever,
        queries: list[str],
        k: int,
        where: dict[str, Any] | None = None,
        vectors: np.ndarray | None = None,
    ) -> list[list[Hit]]:
        return getattr(self.inner, method)(queries, k, where=both(self.scope, where), vectors=vectors)

    call.__doc__ = f"`Retriever.{method}` among the documents both the scope and `where` admit."
    return call


class ScopedRetriever:
    """A retriever that sees only the documents `scope` admits (a domain's adapter reads its own
    domain's passages): every retrieval's filter is joined with the scope; the rest is the
    retriever's own."""

    def __init__(self, retriever: Retriever, scope: dict[str, Any] | None) -> None:
        self.inner, self.scope = retriever, scope

    retrieve = _within_scope("retrieve")
    first_stage = _within_scope("first_stage")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
