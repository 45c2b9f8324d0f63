"""Registering an evaluated adapter and its index as linked MLflow versions, through the gate.

The index version is registered once per content hash (a later adapter on the same chunks links
to it); the adapter version records the index version, the figures, the gate and the lineage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from components.registry import mlflow_registry as reg
from components.registry.gate import gate
from components.stores.manifest import IndexManifest

INDEX_TAG_KEYS = (
    "content_hash",
    "embedder",
    "dim",
    "count",
    "corpus_version",
    "store",
    "retrieval_mode",
    "documents",
)


def index_chain_tags(client: MlflowClient, manifest: IndexManifest) -> dict[str, Any]:
    """Tags linking an index version to its parent: content hash, registry version, what changed."""
    parent, update = manifest.parent or {}, manifest.update or {}
    tags = {
        "index_version_local": manifest.index_version,
        "update_mode": update.get("mode", "full"),
        "chunks_added": update.get("added", ""),
        "chunks_removed": update.get("removed", ""),
    }
    if parent.get("content_hash"):
        tags["parent_content_hash"] = parent["content_hash"]
        found = reg.find_version(client, reg.INDEX_MODEL, "content_hash", parent["content_hash"])
        tags["parent_version"] = found.version if found else "unregistered"
    return tags


def flat_figures(metrics: dict[str, Any]) -> dict[str, float]:
    """`system.metric` figures of evaluate.json (with their interval bounds), adapter minus RAG and
    the chunk- and document-level recall@k and MRR, as MLflow metrics and tags."""
    systems = ("base", "rag", "adapter", "adapter_minus_rag")
    flat = {f"{s}.{m}": v for s in systems for m, v in metrics.get(s, {}).items()}
    k = metrics["k"]
    for level in ("chunk", "doc"):
        flat[f"{level}_recall_at_{k}"] = metrics.get(f"{level}_recall@{k}")
        flat[f"{level}_mrr"] = metrics.get(f"{level}_mrr")
    numbers = {name: v for name, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {name: float(v) for name, v in numbers.items()}


def _index_version(
    client: MlflowClient, run_id: str, manifest: IndexManifest, index: Path, lineage: dict
) -> Any:
    """The registered version holding this index snapshot, registered now if there is none."""
    found = reg.find_version(client, reg.INDEX_MODEL, "content_hash", manifest.content_hash)
    if found is not None and found.tags.get("embedder") == manifest.embedder:
        return found
    mlflow.log_artifacts(str(index), "index")
    tags = {k: getattr(manifest, k) for k in INDEX_TAG_KEYS} | index_chain_tags(client, manifest) | lineage
    return reg.register_version(client, reg.INDEX_MODEL, run_id, "index", tags)


def register_pair(
    *,
    client: MlflowClient,
    metrics: dict[str, Any],
    manifest: IndexManifest,
    adapter_config: dict[str, Any],
    index: Path,
    adapter: Path,
    reports: list[Path],
    lineage: dict[str, str],
    gate_metric: str,
    min_gain: float,
    alias: str,
    skip_on_failure: bool,
) -> dict[str, Any]:
    """One MLflow run with the figures; the gate's decision; the linked versions unless skipped."""
    reg.ensure_registered_model(
        client,
        reg.INDEX_MODEL,
        "Vector index versions (store snapshot or server collection + BM25 + manifest).",
    )
    reg.ensure_registered_model(client, reg.ADAPTER_MODEL, "Retrieval-augmented PEFT adapters.")
    flat = flat_figures(metrics)
    with mlflow.start_run(run_name=f"register-{manifest.corpus_version}") as run_info:
        run_id = run_info.info.run_id
        mlflow.log_params(
            {
                "base_model": adapter_config["base_model"],
                "method": adapter_config["method"],
                "embedder": manifest.embedder,
                "corpus_version": manifest.corpus_version,
                "index_content_hash": manifest.content_hash,
            }
        )
        mlflow.log_metrics(flat)
        mlflow.set_tags(lineage)
        for path in reports:
            if path.exists():
                mlflow.log_artifact(str(path), "evaluation")
        champion = reg.version_by_alias(client, reg.ADAPTER_MODEL, "champion")
        promote, reason = gate(metrics, champion, gate_metric, min_gain)
        mlflow.set_tag("gate_reason", reason)
        # without held-out questions there is no evidence to refuse on: register, let a person judge
        if not promote and skip_on_failure and metrics.get("questions"):
            return {"run_id": run_id, "registered": False, "promoted": False, "reason": reason}
        index_version = _index_version(client, run_id, manifest, index, lineage)
        mlflow.log_artifacts(str(adapter), "adapter")
        adapter_version = reg.register_version(
            client,
            reg.ADAPTER_MODEL,
            run_id,
            "adapter",
            {
                "index_version": index_version.version,
                "index_content_hash": manifest.content_hash,
                "base_model": adapter_config["base_model"],
                "adapter_method": adapter_config["method"],
                "fusion": adapter_config.get("fusion", "in_context"),
                "corpus_version": manifest.corpus_version,
                "gate": "passed" if promote else "failed",
                "gate_reason": reason,
                **{k: round(v, 6) for k, v in flat.items()},
                **lineage,
            },
        )
        if promote:
            client.set_registered_model_alias(reg.ADAPTER_MODEL, alias, adapter_version.version)
    return {
        "run_id": run_id,
        "registered": True,
        "index_version": index_version.version,
        "adapter_version": adapter_version.version,
        "promoted": promote,
        "alias": alias if promote else None,
        "reason": reason,
    }
