"""Qdrant backend: local mode (a folder, no server) by default, a Qdrant server when `url` is set."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from typing_extensions import override

from components.stores.base import (
    STORES,
    Hit,
    StoreInputError,
    StoreUnavailable,
    VectorStore,
    check_batch,
    upsert_in_batches,
)

ID_KEY = "_rid"
"""Payload key holding our string id; Qdrant point ids must be integers or UUIDs."""
LOCAL_COLLECTION = "retro"
BATCH = 512


def point_id(rid: str) -> str:
    """The UUID a string id is stored under (stable across runs and machines)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"retro:{rid}"))


def qdrant_filter(where: dict[str, Any] | None):  # noqa: ANN201
    """A Qdrant filter requiring every key to equal its value (a list means any of)."""
    if not where:
        return None
    from qdrant_client import models

    conditions = []
    for key, wanted in where.items():
        if isinstance(wanted, (list, tuple, set)):
            match = models.MatchAny(any=list(wanted))
        else:
            match = models.MatchValue(value=wanted)
        conditions.append(models.FieldCondition(key=key, match=match))
    return models.Filter(must=conditions)


@STORES.register("qdrant")
class QdrantStore(VectorStore):
    """One Qdrant collection with dot-product vectors and our payloads.

    Without `url` the store runs in qdrant-client's local mode: a snapshot folder (or memory when
    no `path` is given), exact search, no server. With `url` it talks to a Qdrant server; the API
    key is read from the environment variable named by `api_key_env`, never from params.yaml.
    Each index version on a server is its own collection, named after the version's content hash.
    """

    def __init__(
        self,
        dim: int,
        path: str | None = None,
        url: str | None = None,
        api_key_env: str = "QDRANT_API_KEY",
        name: str = "retro",
        prefer_grpc: bool = False,
        timeout: int = 30,
    ) -> None:
        from qdrant_client import QdrantClient

        self.dim, self.url, self.api_key_env = dim, url, api_key_env
        self.prefer_grpc, self.timeout = prefer_grpc, timeout
        self.path = Path(path) if path and not url else None
        if url:
            pointer = Path(path) / "qdrant.json" if path else None
            exists = pointer is not None and pointer.exists()
            self.collection = json.loads(pointer.read_text())["collection"] if exists else name
            self.client = QdrantClient(
                url=url, api_key=os.environ.get(api_key_env), prefer_grpc=prefer_grpc, timeout=timeout
            )
        else:
            self.collection = LOCAL_COLLECTION
            if self.path is not None:
                self.path.mkdir(parents=True, exist_ok=True)
                self.client = QdrantClient(path=str(self.path))
            else:
                self.client = QdrantClient(location=":memory:")
        self._ensure_collection()

    def _call(self, what: str, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        """Run a client call; connection problems become StoreUnavailable naming the server."""
        try:
            return fn(*args, **kwargs)
        except (StoreInputError, KeyError):
            raise
        except Exception as err:  # the client raises httpx, grpc and its own errors
            where = self.url or f"local storage {self.path or ':memory:'}"
            raise StoreUnavailable(f"Qdrant {what} failed at {where}: {type(err).__name__}: {err}") from err

    def _ensure_collection(self) -> None:
        from qdrant_client import models

        if self._call("connection", self.client.collection_exists, self.collection):
            info = self._call("collection lookup", self.client.get_collection, self.collection)
            size = info.config.params.vectors.size
            if size != self.dim:
                raise StoreInputError(
                    f"Qdrant collection {self.collection!r} has dim {size}, expected {self.dim}"
                )
            return
        self._call(
            "create collection",
            self.client.create_collection,
            self.collection,
            vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.DOT),
        )

    @override
    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        from qdrant_client import models

        vectors = check_batch(ids, vectors, payloads, self.dim)
        for start in range(0, len(ids), BATCH):
            part = slice(start, start + BATCH)
            batch = models.Batch(
                ids=[point_id(i) for i in ids[part]],
                vectors=vectors[part].tolist(),
                payloads=[{**p, ID_KEY: i} for i, p in zip(ids[part], payloads[part], strict=True)],
            )
            self._call("upsert", self.client.upsert, self.collection, points=batch, wait=True)

    @override
    def delete(self, ids: list[str]) -> None:
        from qdrant_client import models

        for start in range(0, len(ids), BATCH):
            selector = models.PointIdsList(points=[point_id(i) for i in ids[start : start + BATCH]])
            self._call("delete", self.client.delete, self.collection, points_selector=selector, wait=True)

    @override
    def search(self, queries: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[list[Hit]]:
        from qdrant_client import models

        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim:
            raise StoreInputError(f"queries must have {self.dim} dimensions, got {queries.shape[1]}")
        if k <= 0 or not len(queries):
            return [[] for _ in range(len(queries))]
        flt = qdrant_filter(where)
        requests = [
            models.QueryRequest(query=q.tolist(), limit=k, filter=flt, with_payload=True) for q in queries
        ]
        responses = self._call("search", self.client.query_batch_points, self.collection, requests=requests)
        return [[_hit(p.payload, p.score) for p in response.points] for response in responses]

    @override
    def count(self) -> int:
        return int(self._call("count", self.client.count, self.collection, exact=True).count)

    def _records(self, with_vectors: bool) -> Iterator[Any]:
        offset = None
        while True:
            records, offset = self._call(
                "scroll",
                self.client.scroll,
                self.collection,
                limit=BATCH,
                offset=offset,
                with_payload=True,
                with_vectors=with_vectors,
            )
            yield from records
            if offset is None:
                return

    @override
    def ids(self) -> list[str]:
        return [r.payload[ID_KEY] for r in self._records(with_vectors=False)]

    @override
    def payload(self, id: str) -> dict[str, Any] | None:
        return self.payloads([id]).get(id)

    @override
    def payloads(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        records = self._call("retrieve", self.client.retrieve, self.collection, [point_id(i) for i in ids])
        return {r.payload[ID_KEY]: _hit(r.payload, 0.0).payload for r in records}

    @override
    def info(self) -> dict[str, Any]:
        mode = {"mode": "remote", "url": self.url} if self.url else {"mode": "local"}
        return {"backend": "qdrant", **mode, "collection": self.collection, "count": self.count()}

    def _copy_into(self, other: QdrantStore) -> None:
        hits = ((_hit(r.payload, 0.0), r.vector) for r in self._records(with_vectors=True))
        upsert_in_batches(other, ((hit.id, vector, hit.payload) for hit, vector in hits), BATCH)

    @override
    def clone(self, folder: Path, name: str) -> QdrantStore:
        """Local: a copy of the storage folder. Server: a new collection `name` holding the same points."""
        if self.url:
            other = self._sibling(path=None, name=name)
            if other.count():
                raise StoreInputError(f"Qdrant collection {name!r} at {self.url} exists and is not empty")
        elif self.path is not None:
            shutil.copytree(self.path, folder, ignore=shutil.ignore_patterns(".lock"))
            return self._sibling(path=str(folder), name=name)
        else:
            other = self._sibling(path=str(folder), name=name)
        self._copy_into(other)
        return other

    def _sibling(self, path: str | None, name: str) -> QdrantStore:
        return QdrantStore(self.dim, path, self.url, self.api_key_env, name, self.prefer_grpc, self.timeout)

    @override
    def drop(self) -> None:
        """Delete this store's server collection (used to discard a failed update)."""
        if self.url:
            self._call("delete collection", self.client.delete_collection, self.collection)

    @override
    def close(self) -> None:
        self.client.close()

    @override
    def save(self, folder: Path) -> None:
        """Local: write (or keep) the storage folder. Server: write a pointer to the collection."""
        folder = Path(folder)
        if self.url:
            folder.mkdir(parents=True, exist_ok=True)
            pointer = {"url": self.url, "collection": self.collection}
            (folder / "qdrant.json").write_text(json.dumps(pointer))
        elif self.path is None or self.path.resolve() != folder.resolve():
            other = self._sibling(path=str(folder), name=self.collection)
            self._copy_into(other)
            other.close()


def _hit(payload: dict[str, Any] | None, score: float) -> Hit:
    payload = dict(payload or {})
    rid = payload.pop(ID_KEY)
    return Hit(rid, float(score), payload)
