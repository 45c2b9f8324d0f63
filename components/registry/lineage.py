"""Where a registered adapter version came from: flow run, git commit, DVC hashes, index, corpus."""

from __future__ import annotations

import os
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components.registry.mlflow_registry import ADAPTER_MODEL, INDEX_MODEL, version_by_alias

INDEX_KEYS = (
    "content_hash",
    "corpus_version",
    "parent_version",
    "update_mode",
    "chunks_added",
    "chunks_removed",
)


def prefect_ui_url() -> str | None:
    """The Prefect UI base: PREFECT_UI_URL, else PREFECT_API_URL without its /api suffix."""
    ui = os.environ.get("PREFECT_UI_URL")
    if ui:
        return ui.rstrip("/")
    api = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    return api.removesuffix("/api") if api.endswith("/api") else None


def lineage(client: MlflowClient, version: str | None = None, alias: str | None = None) -> dict[str, Any]:
    """The lineage record of one `retro-adapter` version (by number or alias)."""
    if alias:
        adapter = version_by_alias(client, ADAPTER_MODEL, alias)
        if adapter is None:
            raise LookupError(f"no {ADAPTER_MODEL} version has alias {alias!r}")
    else:
        try:
            adapter = client.get_model_version(ADAPTER_MODEL, str(version))
        except MlflowException:
            raise LookupError(f"{ADAPTER_MODEL} v{version} is not in the registry") from None
    tags = dict(adapter.tags)
    record: dict[str, Any] = {
        "adapter_version": str(adapter.version),
        "aliases": list(adapter.aliases or []),
        "mlflow_run_id": adapter.run_id,
        "gate": tags.get("gate"),
        "gate_reason": tags.get("gate_reason"),
        "corpus_version": tags.get("corpus_version"),
        "git_commit": tags.get("git_commit"),
        "prefect_flow_run_id": tags.get("prefect_root_flow_run_id")
        or tags.get("prefect_flow_run_id")
        or None,
        "prefect_stage_flow_run_id": tags.get("prefect_flow_run_id") or None,
        "prefect_deployment_id": tags.get("prefect_deployment_id") or None,
        "dvc_lock": tags.get("dvc_lock"),
        "dvc_stages": {k.removeprefix("dvc."): v for k, v in sorted(tags.items()) if k.startswith("dvc.")},
        "index_version": tags.get("index_version"),
    }
    ui = prefect_ui_url()
    if record["prefect_flow_run_id"] and ui:
        record["prefect_flow_run_url"] = f"{ui}/runs/flow-run/{record['prefect_flow_run_id']}"
    if record["index_version"]:
        try:
            index = client.get_model_version(INDEX_MODEL, record["index_version"])
            record["index"] = {k: index.tags.get(k) for k in INDEX_KEYS if index.tags.get(k) is not None}
        except MlflowException:
            record["index"] = {"error": f"{INDEX_MODEL} v{record['index_version']} is not in the registry"}
    return record
