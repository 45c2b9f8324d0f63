"""Registering an evaluated adapter and its index as linked MLflow versions, through the gate.

The index version is registered once per content hash (a later adapter on the same chunks links
to it); the adapter version records the index version and the gate's decision in its tags and a
one-line summary of the figures in its description, with the figures, the plots and the lineage
on its MLflow run. It is registered once per content hash and index version: registering the same adapter
again (a rerun after a crash) gives the version already there.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from components.core.drills import kill_point
from components.registry import mlflow_registry as reg
from components.registry.gate import GateDecision
from components.registry.half_pairs import WORKSPACE_TAG
from components.registry.naming import check_lineage, tag_lineage
from components.stores.manifest import IndexManifest

log = logging.getLogger(__name__)

INDEX_TAG_KEYS = (
    "content_hash",
    "embedder",
    "embedder_hash",  # a fine-tuned embedder, carried in the snapshot ("None": the named one)
    "dim",
    "count",
    "corpus_version",
    "store",
    "retrieval_mode",
    "documents",
)


def index_chain_tags(client: MlflowClient, manifest: IndexManifest, index_model: str) -> dict[str, Any]:
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
        found = reg.find_version(client, index_model, "content_hash", parent["content_hash"])
        tags["parent_version"] = found.version if found else "unregistered"
    return tags


def adapter_hash(folder: Path) -> str:
    """The content hash of an adapter artifact: every file's name and bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:32]


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
    client: MlflowClient, run_id: str, manifest: IndexManifest, index: Path, lineage: dict, index_model: str
) -> tuple[Any, bool]:
    """The registered version holding this index snapshot, registered now if there is none; and
    whether it was registered now."""
    found = reg.find_version(client, index_model, "content_hash", manifest.content_hash)
    if found is not None and found.tags.get("embedder") == manifest.embedder:
        return found, False
    mlflow.log_artifacts(str(index), "index")
    tags = {k: getattr(manifest, k) for k in INDEX_TAG_KEYS} | index_chain_tags(client, manifest, index_model)
    return reg.register_version(client, index_model, run_id, "index", tags | lineage), True


def _unregister_half(client: MlflowClient, index_model: str, version: Any, exc: BaseException) -> None:
    """Delete an index version registered by this run when its adapter version could not be."""
    log.warning(
        "deleted %s v%s: the adapter version linked to it could not be registered (%s); "
        "the registry keeps whole pairs only",
        index_model,
        version.version,
        exc,
    )
    client.delete_model_version(index_model, version.version)


def version_summary(metrics: dict[str, Any], decision: GateDecision, metric: str) -> str:
    """One line for a person reading the registry: the gate's decision, the differences to RAG and
    to the champion with their 95% intervals, the candidate's figure and RAG's. The MLflow versions
    table shows the first 30 characters or so (decision and gain over RAG); the version's page the
    whole line."""
    figures, parts = decision.figures, [f"gate {'passed' if decision.promote else 'refused'}"]
    for against, label in (("rag", "vs RAG"), ("champion", "vs champion")):
        key = f"gate.candidate_minus_{against}"
        if key in figures:
            low, high = figures[f"{key}_lo"], figures[f"{key}_hi"]
            parts.append(f"{figures[key]:+.3f} {label} [{low:+.3f}, {high:+.3f}]")
    values = [
        f"{label} {value:.3f}"
        for system, label in (("adapter", metric), ("rag", "RAG"))
        if isinstance(value := (metrics.get(system) or {}).get(metric), (int, float))
    ]
    if values:
        parts.append(", ".join(values))
    if metrics.get("questions"):
        parts.append(f"{metrics['questions']} held-out questions")
    return " · ".join(parts)


def _adapter_version(
    client: MlflowClient, run_id: str, adapter: Path, adapter_model: str, tags: dict[str, Any], summary: str
) -> tuple[Any, bool]:
    """The adapter version with these weights on this index version, registered now if there is
    none (a rerun after a crash gives the version already there); and whether it was there."""
    content = adapter_hash(adapter)
    found = reg.find_version(client, adapter_model, "adapter_hash", content)
    if found is not None and found.tags.get("index_version") == str(tags["index_version"]):
        mlflow.set_tag("reused_adapter_version", found.version)
        return found, True
    mlflow.log_artifacts(str(adapter), "adapter")
    tags = tags | {"adapter_hash": content}
    return reg.register_version(client, adapter_model, run_id, "adapter", tags, summary), False


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
    decision: GateDecision,
    alias: str,
    skip_on_failure: bool,
    names: reg.ModelNames = reg.DEFAULT_NAMES,
    corpus: str | None = None,
    workspace: str | None = None,
    metric: str = "f1",
) -> dict[str, Any]:
    """One MLflow run with the figures and the gate's decision; the linked versions unless skipped.
    The registered models are tagged with `corpus`; LineageConflict when they hold another. The
    pair is all or nothing: an index version registered here whose adapter version fails is
    deleted (a killed run's is, by the next register: components/registry/half_pairs.py)."""
    if corpus is not None:
        check_lineage(client, names, corpus)
    reg.ensure_registered_model(
        client,
        names.index,
        "Vector index versions (store snapshot or server collection + BM25 + manifest).",
    )
    reg.ensure_registered_model(client, names.adapter, "Retrieval-augmented PEFT adapters.")
    if corpus is not None:
        tag_lineage(client, names, corpus)
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
        mlflow.log_metrics(flat | decision.figures)
        mlflow.set_tags(
            lineage
            | ({WORKSPACE_TAG: workspace} if workspace else {})
            | ({"corpus": corpus} if corpus else {})
        )
        for path in reports:  # files, and folders (the plots) as evaluation/<folder>/
            if path.is_dir():
                mlflow.log_artifacts(str(path), f"evaluation/{path.name}")
            elif path.exists():
                mlflow.log_artifact(str(path), "evaluation")
        promote, reason = decision.promote, decision.reason
        questions_tag = {"eval_questions": metrics["eval_questions"]} if metrics.get("eval_questions") else {}
        mlflow.set_tags({"gate": "passed" if promote else "refused", "gate_reason": reason} | questions_tag)
        # without held-out questions there is no evidence to refuse on: register, let a person judge
        if not promote and skip_on_failure and metrics.get("questions"):
            refused = {"registered": False, "promoted": False, "reason": reason, "model_name": names.name}
            return {"run_id": run_id, **refused}
        index_version, index_is_new = _index_version(client, run_id, manifest, index, lineage, names.index)
        if index_is_new:
            kill_point("registered-index")
        # the few tags a person scans in the versions table and serving reads; the figures, the gate's
        # reason and the lineage (commit, dvc.lock hashes, Prefect runs) are on the linked run
        tags = {
            "index_version": index_version.version,
            "corpus_version": manifest.corpus_version,
            "adapter_method": adapter_config["method"],
            "fusion": adapter_config.get("fusion", "in_context"),
            "gate": "passed" if promote else "failed",
            **({"corpus": corpus} if corpus else {}),
            **questions_tag,
        }
        try:
            summary = version_summary(metrics, decision, metric)
            adapter_version, reused = _adapter_version(client, run_id, adapter, names.adapter, tags, summary)
        except Exception as exc:
            if index_is_new:
                _unregister_half(client, names.index, index_version, exc)
            raise
        if promote:
            client.set_registered_model_alias(names.adapter, alias, adapter_version.version)
    return {
        "run_id": run_id,
        "registered": True,
        "reused": reused,
        "index_version": index_version.version,
        "adapter_version": adapter_version.version,
        "promoted": promote,
        "alias": alias if promote else None,
        "reason": reason,
        "model_name": names.name,
    }
