"""Where a registered adapter version came from: flow run, git commit, DVC hashes, index, corpus."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components.registry.mlflow_registry import DEFAULT_NAMES, ModelNames, version_by_alias

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


def lineage(
    client: MlflowClient,
    version: str | None = None,
    alias: str | None = None,
    names: ModelNames = DEFAULT_NAMES,
) -> dict[str, Any]:
    """The lineage record of one adapter version (by number or alias)."""
    if alias:
        adapter = version_by_alias(client, names.adapter, alias)
        if adapter is None:
            raise LookupError(f"no {names.adapter} version has alias {alias!r}")
    else:
        try:
            adapter = client.get_model_version(names.adapter, str(version))
        except MlflowException:
            raise LookupError(f"{names.adapter} v{version} is not in the registry") from None
    # lineage lives on the version's MLflow run; versions registered before kept it in their tags
    run_tags = client.get_run(adapter.run_id).data.tags if adapter.run_id else {}
    tags = {**run_tags, **adapter.tags}
    record: dict[str, Any] = {
        "adapter_version": str(adapter.version),
        "aliases": list(adapter.aliases or []),
        "mlflow_run_id": adapter.run_id,
        "gate": tags.get("gate"),
        "gate_reason": tags.get("gate_reason"),
        "model": names.adapter,
        "corpus": tags.get("corpus"),
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
            index = client.get_model_version(names.index, record["index_version"])
            record["index"] = {k: index.tags.get(k) for k in INDEX_KEYS if index.tags.get(k) is not None}
        except MlflowException:
            record["index"] = {"error": f"{names.index} v{record['index_version']} is not in the registry"}
    return record


def git_commit(root: Path | str = ".") -> str:
    """The commit the project is at (`unknown` outside a git checkout)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_lock_hashes(dvc_lock: Path) -> dict[str, str]:
    """One short hash a stage over the md5s of its outs in dvc.lock, plus one for the whole file."""
    if not dvc_lock.exists():
        return {}
    text = dvc_lock.read_text()
    lock = yaml.safe_load(text) or {}
    hashes = {"dvc_lock": hashlib.sha256(text.encode()).hexdigest()[:16]}
    for stage, entry in (lock.get("stages") or {}).items():
        md5s = sorted(o.get("md5", "") for o in entry.get("outs", []))
        hashes[f"dvc.{stage}"] = hashlib.sha256("".join(md5s).encode()).hexdigest()[:16]
    return hashes


def lineage_tags(root: Path, dvc_lock: Path) -> dict[str, str]:
    """What a registered version records of where it came from: commit, DVC hashes, Prefect runs."""
    return {
        "git_commit": git_commit(root),
        **dvc_lock_hashes(dvc_lock),
        "prefect_flow_run_id": os.environ.get("RETRO_FLOW_RUN_ID", ""),
        "prefect_root_flow_run_id": os.environ.get("RETRO_ROOT_FLOW_RUN_ID", ""),
        "prefect_deployment_id": os.environ.get("RETRO_DEPLOYMENT_ID", ""),
    }
