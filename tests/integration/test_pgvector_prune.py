"""`retro prune-index`: the pgvector tables of index versions that are neither the current one nor
registered in MLflow are dropped; the others, and tables the index stage did not make, stay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from components.cli.app import app
from components.registry import mlflow_registry as reg
from components.stores import STORES
from components.stores.manifest import INDEX_SCHEMA
from components.stores.pgvector_store import version_tables

CURRENT, REGISTERED, RETIRED, OTHER = "a" * 16, "b" * 16, "c" * 16, "d" * 16


def _table(url: str, name: str) -> None:
    store = STORES.build("pgvector", dim=2, url=url, name=name, index="none")
    store.upsert(["x"], np.ones((1, 2), dtype=np.float32), [{}])
    store.close()


def test_prune_drops_only_versions_neither_current_nor_registered(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for digest in (CURRENT, REGISTERED, RETIRED, OTHER):
        _table(pg_database, f"retro_{digest}")
    _table(pg_database, "someone_elses_table")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = reg.configure(uri)
    client.create_registered_model("retro-index")
    client.create_model_version("retro-index", str(tmp_path), tags={"content_hash": REGISTERED})
    params = {
        "index": {"store": "pgvector", "store_params": {"url": pg_database, "index": "none"}},
        "register": {"tracking_uri": uri, "model_name": "retro"},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    index = tmp_path / "data" / "index"
    index.mkdir(parents=True)
    manifest = {"schema_version": INDEX_SCHEMA, "content_hash": CURRENT, "embedder": "m", "dim": 2,
                "store": "pgvector", "retrieval_mode": "dense", "count": 1, "documents": 1,
                "corpus_version": "v1"}  # fmt: skip
    (index / "manifest.json").write_text(json.dumps(manifest))

    (index / "manifest.json").write_text("{broken")
    refused = CliRunner().invoke(app, ["prune-index"])
    assert refused.exit_code == 1 and len(version_tables(pg_database)) == 4  # unsure: nothing dropped
    (index / "manifest.json").write_text(json.dumps(manifest))
    listed = CliRunner().invoke(app, ["prune-index", "--dry-run"])
    assert listed.exit_code == 0, listed.output
    assert f"retro_{RETIRED}" in listed.output and f"retro_{OTHER}" in listed.output
    assert len(version_tables(pg_database)) == 4  # a dry run drops nothing
    pruned = CliRunner().invoke(app, ["prune-index"])
    assert pruned.exit_code == 0 and "dropped 2 table(s)" in pruned.output, pruned.output
    assert version_tables(pg_database) == [f"retro_{CURRENT}", f"retro_{REGISTERED}"]
    store = STORES.build("pgvector", dim=2, url=pg_database, name="someone_elses_table", index="none")
    assert store.count() == 1  # not an index version: untouched
    store.close()
