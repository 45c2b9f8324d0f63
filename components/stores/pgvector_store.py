"""pgvector backend: one PostgreSQL table per index version, through psycopg 3 and `pgvector`.

The connection string comes from `url` (without a password: libpq reads `PGPASSWORD` or
`~/.pgpass`) or from the environment variable named by `url_env` (default `RETRO_PG_URL`), never
from a secret in params.yaml. Each index version is its own table (`id text`, `embedding
vector(dim)`, `payload jsonb`), named after the version's content hash; an update copies the
previous table in SQL (nothing is embedded again), a discarded update drops its table. Searches
order by inner product (`<#>`; the vectors are L2-normalised), with an HNSW or IVFFlat index
made from `index` and its search parameter (`hnsw.ef_search`, `ivfflat.probes`) set for each
query. Filters (`where`) become JSONB containment on the payload, which a GIN index serves.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from typing_extensions import override

from components.stores.base import STORES, Hit, StoreInputError, StoreUnavailable, VectorStore, check_batch

POINTER = "pgvector.json"
BATCH = 1000
INDEXES = ("hnsw", "ivfflat", "none")


def table_name(name: str) -> str:
    """A safe lower-case SQL identifier for a store name (content hashes and `retro_...` names).
    Only [a-z0-9_] survive, which is why the queries may put it in their text (bandit's B608 is
    skipped for this, pyproject.toml); every value goes in as a parameter."""
    cleaned = re.sub(r"[^a-z0-9_]", "_", name.lower())[:63]
    if not cleaned or cleaned[0].isdigit():
        cleaned = f"t_{cleaned}"[:63]
    return cleaned


def where_sql(where: dict[str, Any] | None) -> tuple[str, list[str]]:
    """SQL conditions and their parameters: every key equals its value (a list means any of)."""
    if not where:
        return "", []
    clauses, values = [], []
    for key, wanted in where.items():
        options = list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted]
        clauses.append("(" + " OR ".join(["payload @> %s::jsonb"] * len(options)) + ")")
        values += [json.dumps({key: option}) for option in options]
    return " WHERE " + " AND ".join(clauses), values


@STORES.register("pgvector")
class PgvectorStore(VectorStore):
    """One pgvector table; see the module docstring."""

    def __init__(
        self,
        dim: int,
        path: str | None = None,
        url: str | None = None,
        url_env: str = "RETRO_PG_URL",
        name: str = "retro",
        index: str = "hnsw",
        m: int = 16,
        ef_construction: int = 64,
        ef_search: int = 100,
        lists: int = 100,
        probes: int = 10,
        timeout: int = 10,
    ) -> None:
        if index not in INDEXES:
            raise StoreInputError(f"index.store_params.index must be one of {INDEXES}, got {index!r}")
        self.dim, self.url_env, self.index = dim, url_env, index
        self.url = self.connection_url(url, url_env)
        self.settings = {"m": m, "ef_construction": ef_construction, "ef_search": ef_search, "lists": lists}
        self.settings["probes"], self.timeout = probes, timeout
        pointer = Path(path) / POINTER if path else None
        self.table = table_name(
            json.loads(pointer.read_text())["table"] if pointer and pointer.exists() else name
        )
        self.conn = self._connect()
        self._ensure_table()
        self._ivfflat_ready = index == "ivfflat" and self._has_vector_index()

    @staticmethod
    def connection_url(url: str | None, url_env: str = "RETRO_PG_URL") -> str:
        """`url`, else the connection string in the environment variable `url_env`, or a clear error."""
        found = url or os.environ.get(url_env)
        if not found:
            raise StoreUnavailable(
                f"pgvector needs index.store_params.url or the {url_env} environment variable"
            )
        return found

    # -- connection ------------------------------------------------------------------------------
    def _connect(self):  # noqa: ANN202
        import psycopg
        from pgvector.psycopg import register_vector

        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=self.timeout)
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            register_vector(conn)
        except psycopg.Error as err:
            raise StoreUnavailable(f"pgvector connection failed at {self.where()}: {err}".strip()) from err
        return conn

    def where(self) -> str:
        """The server, without credentials."""
        return re.sub(r"//[^@/]*@", "//", self.url or "")

    def _sql(self, what: str, query: str, params: Any = None, many: bool = False):  # noqa: ANN202
        import psycopg

        try:
            if many:
                with self.conn.cursor() as cursor:
                    cursor.executemany(query, params)
                return None
            return self.conn.execute(query, params)
        except psycopg.Error as err:
            raise StoreUnavailable(f"pgvector {what} failed at {self.where()} ({self.table}): {err}") from err

    def _ensure_table(self) -> None:
        found = self._sql(
            "table lookup",
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'embedding'",
            (self.table,),
        ).fetchone()
        if found is not None:
            if found[0] != self.dim:
                raise StoreInputError(
                    f"pgvector table {self.table!r} has dim {found[0]}, expected {self.dim}"
                )
            return
        self._sql(
            "create table",
            f"CREATE TABLE {self.table} (id text PRIMARY KEY, embedding vector({self.dim}) NOT NULL, "
            "payload jsonb NOT NULL)",
        )
        self._create_indexes()

    def _has_vector_index(self) -> bool:
        found = self._sql(
            "index lookup",
            "SELECT 1 FROM pg_indexes WHERE tablename = %s AND indexdef LIKE %s",
            (self.table, "%USING ivfflat%"),
        ).fetchone()
        return found is not None

    def _create_indexes(self, payload: bool = True) -> None:
        """The payload's GIN index, and the vector index of `index` (IVFFlat only once the table
        has at least `lists` rows to cluster)."""
        s = self.settings
        if payload:
            self._sql("create index", f"CREATE INDEX ON {self.table} USING gin (payload jsonb_path_ops)")
        if self.index == "hnsw":
            options = f"(m = {int(s['m'])}, ef_construction = {int(s['ef_construction'])})"
            self._sql(
                "create index",
                f"CREATE INDEX ON {self.table} USING hnsw (embedding vector_ip_ops) WITH {options}",
            )
        elif self.index == "ivfflat" and self.count() >= int(s["lists"]):
            options = f"(lists = {int(s['lists'])})"
            self._sql(
                "create index",
                f"CREATE INDEX ON {self.table} USING ivfflat (embedding vector_ip_ops) WITH {options}",
            )

    # -- the protocol ----------------------------------------------------------------------------
    @override
    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        from psycopg.types.json import Jsonb

        vectors = check_batch(ids, vectors, payloads, self.dim)
        rows = [(i, v, Jsonb(p)) for i, v, p in zip(ids, vectors, payloads, strict=True)]
        query = (
            f"INSERT INTO {self.table} (id, embedding, payload) VALUES (%s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, payload = EXCLUDED.payload"
        )
        with self.conn.transaction():  # all of the batch or none of it
            for start in range(0, len(rows), BATCH):
                self._sql("upsert", query, rows[start : start + BATCH], many=True)

    @override
    def delete(self, ids: list[str]) -> None:
        if ids:
            self._sql("delete", f"DELETE FROM {self.table} WHERE id = ANY(%s)", (list(ids),))

    @override
    def search(self, queries: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[list[Hit]]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim:
            raise StoreInputError(f"queries must have {self.dim} dimensions, got {queries.shape[1]}")
        if k <= 0 or not len(queries):
            return [[] for _ in range(len(queries))]
        condition, values = where_sql(where)
        query = (
            f"SELECT id, payload, -(embedding <#> %s) AS score FROM {self.table}{condition} "
            "ORDER BY embedding <#> %s LIMIT %s"
        )
        if self.index == "ivfflat" and not self._has_vector_index():
            self._create_indexes(
                payload=False
            )  # IVF lists are clustered from the rows: made once there are some
        results = []
        with self.conn.transaction():
            self._set_search_parameter(filtered=bool(where))
            for vector in queries:
                rows = self._sql("search", query, (vector, *values, vector, k)).fetchall()
                results.append([Hit(rid, float(score), dict(payload)) for rid, payload, score in rows])
        return results

    def _set_search_parameter(self, filtered: bool) -> None:
        """The index's search breadth for this transaction. A filtered search skips the vector
        index (which would filter its k nearest afterwards and come back short): the GIN index
        finds the matching rows and they are ranked exactly."""
        if filtered:
            self._sql("search settings", "SET LOCAL enable_indexscan = off")
        elif self.index == "hnsw":
            self._sql("search settings", f"SET LOCAL hnsw.ef_search = {int(self.settings['ef_search'])}")
        elif self.index == "ivfflat":
            self._sql("search settings", f"SET LOCAL ivfflat.probes = {int(self.settings['probes'])}")

    @override
    def count(self) -> int:
        return int(self._sql("count", f"SELECT count(*) FROM {self.table}").fetchone()[0])

    @override
    def ids(self) -> list[str]:
        return [row[0] for row in self._sql("ids", f"SELECT id FROM {self.table}").fetchall()]

    @override
    def payload(self, id: str) -> dict[str, Any] | None:
        return self.payloads([id]).get(id)

    @override
    def payloads(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        rows = self._sql("payloads", f"SELECT id, payload FROM {self.table} WHERE id = ANY(%s)", (list(ids),))
        return {rid: dict(payload) for rid, payload in rows.fetchall()}

    @override
    def info(self) -> dict[str, Any]:
        size = self._sql("size", "SELECT pg_total_relation_size(to_regclass(%s))", (self.table,)).fetchone()[
            0
        ]
        return {
            "backend": "pgvector",
            "mode": "remote",
            "url": self.where(),
            "table": self.table,
            "index": self.index,
            "count": self.count(),
            "bytes": int(size or 0),
        }

    @override
    def clone(self, folder: Path, name: str) -> PgvectorStore:
        """A new table `name` holding the same rows, copied in SQL (no vector leaves the server)."""
        other = PgvectorStore(self.dim, None, self.url, self.url_env, name, self.index, **self._options())
        if other.count():
            other.close()
            raise StoreInputError(f"pgvector table {other.table!r} at {self.where()} exists and is not empty")
        other._sql(
            "copy",
            f"INSERT INTO {other.table} (id, embedding, payload) "
            f"SELECT id, embedding, payload FROM {self.table}",
        )
        return other

    def _options(self) -> dict[str, Any]:
        return {**self.settings, "timeout": self.timeout}

    @override
    def save(self, folder: Path) -> None:
        """Write a pointer to the table into the snapshot folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / POINTER).write_text(json.dumps({"url": self.where(), "table": self.table}))

    @override
    def drop(self) -> None:
        """Drop this version's table (a discarded update, or a retired version)."""
        self._sql("drop table", f"DROP TABLE IF EXISTS {self.table}")

    @override
    def close(self) -> None:
        self.conn.close()


VERSION_TABLE = re.compile(r"^retro_[0-9a-f]{16}$")
"""The tables the index stage makes: `retro_<content hash>`, one per index version."""


def version_tables(url: str) -> list[str]:
    """The index-version tables on the server at `url`."""
    import psycopg

    with psycopg.connect(url, connect_timeout=10) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()
    return sorted(name for (name,) in rows if VERSION_TABLE.match(name))


def prune_version_tables(url: str, keep: set[str], dry_run: bool = False) -> list[str]:
    """Drop the index-version tables whose content hash is not in `keep`; returns their names."""
    import psycopg

    gone = [t for t in version_tables(url) if t.removeprefix("retro_") not in keep]
    if gone and not dry_run:
        with psycopg.connect(url, connect_timeout=10, autocommit=True) as conn:
            for table in gone:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
    return gone
