"""Weaviate backend (weaviate-client v4): one collection per index version, vectors brought by us."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

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
from components.stores.qdrant_store import point_id

log = logging.getLogger(__name__)

ID_PROPERTY = "rid"
PAYLOAD_PROPERTY = "payload_json"
RESERVED = {"id", "_id", "vector", "_additional", ID_PROPERTY, PAYLOAD_PROPERTY}
BATCH = 200


class WeaviateBatchError(StoreUnavailable):
    """Objects Weaviate refused during a batch import; `failures` lists every one of them."""

    def __init__(self, message: str, failures: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.failures = failures


def collection_name(name: str) -> str:
    """A valid Weaviate class name: starts with a capital letter, only letters, digits and `_`."""
    cleaned = re.sub(r"[^0-9A-Za-z_]", "_", name) or "Retro"
    return cleaned[0].upper() + cleaned[1:] if cleaned[0].isalpha() else "Retro_" + cleaned


def weaviate_filter(where: dict[str, Any] | None):  # noqa: ANN201
    """A Weaviate filter requiring every key to equal its value (a list means any of)."""
    if not where:
        return None
    from weaviate.classes.query import Filter

    parts = [
        Filter.by_property(key).contains_any(list(v))
        if isinstance(v, (list, tuple, set))
        else Filter.by_property(key).equal(v)
        for key, v in where.items()
    ]
    return parts[0] if len(parts) == 1 else Filter.all_of(parts)


@STORES.register("weaviate")
class WeaviateStore(VectorStore):
    """A Weaviate collection with self-provided vectors (HNSW, dot product) and our payloads.

    `url` is the server's HTTP address (gRPC on `grpc_port`); the API key is read from the
    environment variable named by `api_key_env`. Payload fields become filterable properties,
    and the whole payload is also kept as JSON so that it comes back exactly as written.
    """

    def __init__(
        self,
        dim: int,
        url: str | None = None,
        path: str | None = None,
        api_key_env: str = "WEAVIATE_API_KEY",
        grpc_port: int = 50051,
        name: str = "retro",
        timeout: int = 30,
    ) -> None:
        url = url or os.environ.get("WEAVIATE_URL")
        if not url:
            raise StoreInputError("the weaviate store needs index.store_params.url (or WEAVIATE_URL)")
        self.dim, self.url, self.api_key_env = dim, url, api_key_env
        self.grpc_port, self.timeout = grpc_port, timeout
        pointer = Path(path) / "weaviate.json" if path else None
        exists = pointer is not None and pointer.exists()
        self.name = json.loads(pointer.read_text())["collection"] if exists else collection_name(name)
        self.client = self._connect()
        self._ensure_collection()
        self.collection = self.client.collections.get(self.name)

    def _connect(self):  # noqa: ANN202
        import weaviate
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        parsed = urlparse(self.url)
        secure = parsed.scheme == "https"
        key = os.environ.get(self.api_key_env)
        try:
            return weaviate.connect_to_custom(
                http_host=parsed.hostname or "localhost",
                http_port=parsed.port or (443 if secure else 8080),
                http_secure=secure,
                grpc_host=parsed.hostname or "localhost",
                grpc_port=self.grpc_port,
                grpc_secure=secure,
                auth_credentials=Auth.api_key(key) if key else None,
                additional_config=AdditionalConfig(timeout=Timeout(init=self.timeout, query=self.timeout)),
            )
        except Exception as err:  # the client raises its own connection and start-up errors
            raise StoreUnavailable(f"Weaviate is not reachable at {self.url}: {err}") from err

    def _call(self, what: str, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        try:
            return fn(*args, **kwargs)
        except StoreInputError:
            raise
        except Exception as err:
            reason = f"{type(err).__name__}: {err}"
            raise StoreUnavailable(f"Weaviate {what} failed at {self.url}: {reason}") from err

    def _ensure_collection(self) -> None:
        from weaviate.classes.config import Configure, DataType, Property, VectorDistances

        if self._call("collection lookup", self.client.collections.exists, self.name):
            return
        self._call(
            "create collection",
            self.client.collections.create,
            self.name,
            vector_config=Configure.Vectors.self_provided(
                vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.DOT)
            ),
            properties=[
                Property(name=ID_PROPERTY, data_type=DataType.TEXT),
                Property(
                    name=PAYLOAD_PROPERTY,
                    data_type=DataType.TEXT,
                    index_filterable=False,
                    index_searchable=False,
                ),
            ],
        )

    @override
    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        vectors = check_batch(ids, vectors, payloads, self.dim)
        for payload in payloads:
            clash = RESERVED & set(payload)
            if clash:
                raise StoreInputError(f"payload keys {sorted(clash)} are reserved in the weaviate store")
        with self.collection.batch.fixed_size(batch_size=BATCH) as batch:
            for rid, vector, payload in zip(ids, vectors, payloads, strict=True):
                scalars = {k: v for k, v in payload.items() if isinstance(v, (str, int, float, bool))}
                properties = {**scalars, ID_PROPERTY: rid, PAYLOAD_PROPERTY: json.dumps(payload)}
                batch.add_object(properties=properties, vector=vector.tolist(), uuid=point_id(rid))
        failed = self.collection.batch.failed_objects
        if failed:
            failures = [
                {"id": f.object_.properties.get(ID_PROPERTY, "?"), "reason": f.message} for f in failed
            ]
            for failure in failures:
                log.error("weaviate refused object %s: %s", failure["id"], failure["reason"])
            raise WeaviateBatchError(
                f"Weaviate refused {len(failures)} of {len(ids)} objects, e.g. {failures[:3]}", failures
            )

    @override
    def delete(self, ids: list[str]) -> None:
        from weaviate.classes.query import Filter

        for start in range(0, len(ids), BATCH):
            uuids = [point_id(i) for i in ids[start : start + BATCH]]
            self._call("delete", self.collection.data.delete_many, where=Filter.by_id().contains_any(uuids))

    @override
    def search(self, queries: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[list[Hit]]:
        from weaviate.classes.query import MetadataQuery

        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim:
            raise StoreInputError(f"queries must have {self.dim} dimensions, got {queries.shape[1]}")
        flt, results = weaviate_filter(where), []
        for query in queries:
            response = self._call(
                "search",
                self.collection.query.near_vector,
                near_vector=query.tolist(),
                limit=k,
                filters=flt,
                return_metadata=MetadataQuery(distance=True),
            )
            # Weaviate's dot distance is the negated dot product
            results.append([_hit(o.properties, -float(o.metadata.distance)) for o in response.objects])
        return results

    @override
    def count(self) -> int:
        return int(self._call("count", self.collection.aggregate.over_all, total_count=True).total_count)

    def _objects(self, with_vectors: bool) -> Iterator[Any]:
        try:
            yield from self.collection.iterator(include_vector=with_vectors)
        except Exception as err:
            raise StoreUnavailable(f"Weaviate iteration failed at {self.url}: {err}") from err

    @override
    def ids(self) -> list[str]:
        return [o.properties[ID_PROPERTY] for o in self._objects(with_vectors=False)]

    @override
    def payload(self, id: str) -> dict[str, Any] | None:
        return self.payloads([id]).get(id)

    @override
    def payloads(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        from weaviate.classes.query import Filter

        if not ids:
            return {}
        uuids = [point_id(i) for i in ids]
        by_id = Filter.by_id().contains_any(uuids)
        response = self._call("fetch", self.collection.query.fetch_objects, filters=by_id, limit=len(ids))
        return {o.properties[ID_PROPERTY]: _hit(o.properties, 0.0).payload for o in response.objects}

    @override
    def info(self) -> dict[str, Any]:
        return {"backend": "weaviate", "url": self.url, "collection": self.name, "count": self.count()}

    @override
    def clone(self, folder: Path, name: str) -> WeaviateStore:
        """A new collection `name` holding this one's objects and vectors (nothing is re-embedded)."""
        other = WeaviateStore(self.dim, self.url, None, self.api_key_env, self.grpc_port, name, self.timeout)
        if other.count():
            raise StoreInputError(f"Weaviate collection {other.name!r} at {self.url} exists and is not empty")
        hits = ((_hit(o.properties, 0.0), o.vector["default"]) for o in self._objects(with_vectors=True))
        upsert_in_batches(other, ((hit.id, vector, hit.payload) for hit, vector in hits), BATCH)
        return other

    @override
    def drop(self) -> None:
        self._call("delete collection", self.client.collections.delete, self.name)

    @override
    def close(self) -> None:
        self.client.close()

    @override
    def save(self, folder: Path) -> None:
        """The content lives on the server; the snapshot folder records which collection holds it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "weaviate.json").write_text(json.dumps({"url": self.url, "collection": self.name}))


def _hit(properties: dict[str, Any], score: float) -> Hit:
    return Hit(properties[ID_PROPERTY], score, json.loads(properties[PAYLOAD_PROPERTY]))
