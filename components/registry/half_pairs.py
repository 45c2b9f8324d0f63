"""Whole pairs only: an index version whose adapter version was never registered is removed.

register creates the index version first and then the adapter version linked to it. A register
that fails or is killed between the two leaves an index version no adapter links to. It is
deleted, with the reason logged, by the failing register itself (an exception), by the flow that
saw its register stage die (SIGKILL), and by the next register before it registers anything.

Only versions of unfinished runs are touched: the run failed or was killed, or it is still marked
running and belongs to this workspace, whose own register is not running (DVC and the workspace
lock let one run at a time). A version of a finished run, or of a run still going in another
workspace, is never deleted.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components.registry.mlflow_registry import ModelNames

log = logging.getLogger(__name__)
WORKSPACE_TAG = "retro.workspace"
DEAD_RUN_STATES = {"FAILED", "KILLED"}


def workspace_id(root: Path | str) -> str:
    """This workspace, as a register run records it: the machine and the project folder."""
    return f"{socket.gethostname()}:{Path(root).resolve()}"


def linked_index_versions(client: MlflowClient, names: ModelNames) -> set[str]:
    """The index versions some adapter version of the lineage (main or domain) links to."""
    models = [m.name for m in client.search_registered_models(f"name LIKE '{names.name}-adapter%'")]
    linked: set[str] = set()
    for model in models:
        linked |= {v.tags.get("index_version", "") for v in client.search_model_versions(f"name = '{model}'")}
    return linked


def _abandoned(client: MlflowClient, run_id: str | None, workspace: str) -> Any | None:
    """The run that created a version, when it did not finish and nothing can still finish it."""
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    status = run.info.status
    if status in DEAD_RUN_STATES:
        return run
    if status == "RUNNING" and run.data.tags.get(WORKSPACE_TAG) == workspace:
        return run
    return None


def release_half_pairs(client: MlflowClient, names: ModelNames, workspace: str) -> list[str]:
    """Delete the index versions of abandoned register runs that no adapter links to; mark those
    runs KILLED; return one sentence per deleted version (also logged as a warning)."""
    try:
        versions = client.search_model_versions(f"name = '{names.index}'")
    except MlflowException:
        return []
    linked = linked_index_versions(client, names)
    said = []
    for version in sorted(versions, key=lambda v: int(v.version)):
        run = _abandoned(client, version.run_id, workspace) if str(version.version) not in linked else None
        if run is None:
            continue
        client.delete_model_version(names.index, version.version)
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")
        said.append(
            f"deleted {names.index} v{version.version}: its register run {run.info.run_id} stopped "
            "before the adapter version linked to it was registered (the registry keeps whole pairs only)"
        )
        log.warning(said[-1])
    return said
