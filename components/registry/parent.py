"""Refused candidates are not parents: after the gate refuses one, the continual chain folder
(`data/models/current`: adapter, replay reservoir, learned versions, EWC state) is replaced with
the artifact of the champion, or of the newest version that passed the gate, so the next update
trains from an accepted version. The refused one stays in its MLflow run for inspection."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from components.continual.replay import RESERVOIR_FILE, purge_documents
from components.core.artifacts import staged_swap
from components.registry.forget import retrained_without, saw_any
from components.registry.mlflow_registry import version_by_alias


def last_accepted(client: MlflowClient, adapter_model: str) -> Any | None:
    """The champion version, else the newest version that passed the gate, else None; a version
    trained on a document the lineage was retrained without (`retro forget`) is passed over."""
    gone = retrained_without(client, adapter_model)
    champion = version_by_alias(client, adapter_model, "champion")
    if champion is not None and not saw_any(champion, gone):
        return champion
    passed = client.search_model_versions(f"name = '{adapter_model}' and tag.gate = 'passed'")
    clean = [v for v in passed if not saw_any(v, gone)]
    return max(clean, key=lambda v: int(v.version)) if clean else None


def restore_accepted(
    client: MlflowClient, adapter_model: str, chain: Path, forgotten: frozenset[str] = frozenset()
) -> str:
    """Replace `chain` with the last accepted version's adapter artifact, its replay reservoir
    without the `forgotten` documents; a sentence saying what the next update starts from."""
    accepted = last_accepted(client, adapter_model)
    if accepted is None:
        return (
            "no accepted version to go back to (none yet, or each saw a document retrained out), "
            "so the next update continues from this candidate"
        )
    with tempfile.TemporaryDirectory(prefix="retro-parent-") as tmp:
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=accepted.source, dst_path=tmp))
        with staged_swap(Path(chain)) as staging:
            shutil.copytree(folder, staging)
            purge_documents(staging / RESERVOIR_FILE, forgotten)
    which = "the champion" if "champion" in (accepted.aliases or []) else "the newest accepted version"
    return f"the next update starts from {which}, {adapter_model} v{accepted.version}"
