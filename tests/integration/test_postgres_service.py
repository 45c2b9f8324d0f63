"""`retro services up postgres`: a PostgreSQL with pgvector for `index.store: pgvector`, started in
the background, healthy, usable by the store, and stopped by `down`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.cli.services import Services
from components.stores import STORES


def test_the_postgres_service_serves_the_pgvector_store(tmp_path: Path) -> None:
    services = Services(tmp_path, tmp_path / ".services")
    assert "postgres" not in services.status()  # optional: only listed once started
    try:
        assert services.start("postgres", timeout=120).startswith("postgres: started")
        assert services.status()["postgres"] == "healthy"
        url = services.postgres_url
        store = STORES.build("pgvector", dim=4, url=url, name="service_check", index="none")
        store.upsert(["a", "b"], np.eye(4, dtype=np.float32)[:2], [{"doc_id": "x"}, {"doc_id": "y"}])
        assert [h.id for h in store.search(np.eye(4, dtype=np.float32)[:1], 1)[0]] == ["a"]
        store.drop()
        store.close()
        assert services.start("postgres") == "postgres: already running"
    finally:
        assert services.stop("postgres") == "postgres: stopped"
    assert not services.healthy("postgres") and services.postgres_url is None
