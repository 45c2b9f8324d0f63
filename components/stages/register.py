"""register: the index snapshot and the adapter as linked MLflow versions; gate to `challenger`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from typing import Any

import mlflow
import yaml
from pydantic import Field

from components.adapters.peft_adapter import read_artifact_config
from components.config import StrictModel, parse_section
from components.registry import mlflow_registry as reg
from components.stages.common import Layout, stage_main, write_json


class RegisterParams(StrictModel):
    tracking_uri: str = reg.DEFAULT_TRACKING_URI
    gate_metric: str = Field("f1", pattern="^(em|f1)$")
    min_gain: float = Field(0.0, ge=0, description="how much the adapter must beat the champion by")
    alias: str = "challenger"
    on_gate_failure: str = Field(
        "skip",
        pattern="^(skip|register)$",
        description="skip: a version that fails the gate is not registered (its MLflow run keeps the "
        "figures and the reason); register: it is registered with gate=failed and no alias. A corpus "
        "without held-out questions is always registered, never aliased",
    )


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_lock_hashes(layout: Layout) -> dict[str, str]:
    """One short hash a stage over the md5s of its outs in dvc.lock, plus one for the whole file."""
    if not layout.dvc_lock.exists():
        return {}
    text = layout.dvc_lock.read_text()
    lock = yaml.safe_load(text) or {}
    hashes = {"dvc_lock": hashlib.sha256(text.encode()).hexdigest()[:16]}
    for stage, entry in (lock.get("stages") or {}).items():
        md5s = sorted(o.get("md5", "") for o in entry.get("outs", []))
        hashes[f"dvc.{stage}"] = hashlib.sha256("".join(md5s).encode()).hexdigest()[:16]
    return hashes


def index_chain_tags(client, manifest: dict[str, Any]) -> dict[str, Any]:  # noqa: ANN001
    """Tags linking an index version to its parent: content hash, registry version, what changed."""
    parent = manifest.get("parent") or {}
    update = manifest.get("update") or {}
    tags = {
        "index_version_local": manifest.get("index_version", ""),
        "update_mode": update.get("mode", "full"),
        "chunks_added": update.get("added", ""),
        "chunks_removed": update.get("removed", ""),
    }
    if parent.get("content_hash"):
        tags["parent_content_hash"] = parent["content_hash"]
        found = reg.find_version(client, reg.INDEX_MODEL, "content_hash", parent["content_hash"])
        tags["parent_version"] = found.version if found else "unregistered"
    return tags


def gate(metrics: dict[str, Any], champion, p: RegisterParams) -> tuple[bool, str]:  # noqa: ANN001
    """Promote to challenger only what beats the base model and the current champion."""
    if not metrics.get("questions"):
        return False, "no held-out questions were evaluated, so there is nothing to compare"
    key = p.gate_metric
    ours, base = metrics["adapter"][key], metrics["base"][key]
    if ours <= base:
        return (
            False,
            f"adapter {key} {ours:.3f} does not beat the base model without retrieval ({base:.3f})",
        )
    if champion is None:
        return True, f"no champion yet; adapter {key} {ours:.3f} beats the base model ({base:.3f})"
    theirs = float(champion.tags.get(f"adapter.{key}", "nan"))
    if not ours > theirs + p.min_gain:
        return (
            False,
            f"adapter {key} {ours:.3f} does not beat champion v{champion.version} ({theirs:.3f})",
        )
    return True, f"adapter {key} {ours:.3f} beats champion v{champion.version} ({theirs:.3f})"


def run(params: dict[str, Any], layout: Layout) -> dict[str, Any]:
    p = parse_section(RegisterParams, params, "register")
    metrics = json.loads((layout.metrics / "evaluate.json").read_text())
    manifest = json.loads((layout.index / "manifest.json").read_text())
    adapter_config = read_artifact_config(layout.current_adapter)
    client = reg.configure(p.tracking_uri)
    reg.ensure_registered_model(
        client,
        reg.INDEX_MODEL,
        "Vector index versions (store snapshot or server collection + BM25 + manifest).",
    )
    reg.ensure_registered_model(client, reg.ADAPTER_MODEL, "Retrieval-augmented PEFT adapters.")
    lineage = {
        "git_commit": git_commit(),
        **dvc_lock_hashes(layout),
        "prefect_flow_run_id": os.environ.get("RETRO_FLOW_RUN_ID", ""),
        "prefect_root_flow_run_id": os.environ.get("RETRO_ROOT_FLOW_RUN_ID", ""),
        "prefect_deployment_id": os.environ.get("RETRO_DEPLOYMENT_ID", ""),
    }
    flat_metrics = {f"{s}.{m}": v for s in ("base", "rag", "adapter") for m, v in metrics.get(s, {}).items()}
    if f"recall@{metrics['k']}" in metrics:
        flat_metrics[f"recall_at_{metrics['k']}"] = metrics[f"recall@{metrics['k']}"]

    with mlflow.start_run(run_name=f"register-{manifest['corpus_version']}") as run_info:
        run_id = run_info.info.run_id
        mlflow.log_params(
            {
                "base_model": adapter_config["base_model"],
                "method": adapter_config["method"],
                "embedder": manifest["embedder"],
                "corpus_version": manifest["corpus_version"],
                "index_content_hash": manifest["content_hash"],
            }
        )
        mlflow.log_metrics(flat_metrics)
        mlflow.set_tags(lineage)
        for name in ("evaluate.md", "evaluate.json", "predictions.jsonl"):
            if (layout.metrics / name).exists():
                mlflow.log_artifact(str(layout.metrics / name), "evaluation")
        champion = reg.version_by_alias(client, reg.ADAPTER_MODEL, "champion")
        promote, reason = gate(metrics, champion, p)
        mlflow.set_tag("gate_reason", reason)
        # without held-out questions there is no evidence to refuse on: register, let a person judge
        if not promote and p.on_gate_failure == "skip" and metrics.get("questions"):
            result = {"run_id": run_id, "registered": False, "promoted": False, "reason": reason}
            write_json(layout.metrics / "register.json", result | {"tracking_uri": p.tracking_uri})
            return result
        index_version = reg.find_version(client, reg.INDEX_MODEL, "content_hash", manifest["content_hash"])
        if index_version is None or index_version.tags.get("embedder") != manifest["embedder"]:
            mlflow.log_artifacts(str(layout.index), "index")
            index_version = reg.register_version(
                client,
                reg.INDEX_MODEL,
                run_id,
                "index",
                {
                    k: manifest[k]
                    for k in (
                        "content_hash",
                        "embedder",
                        "dim",
                        "count",
                        "corpus_version",
                        "store",
                        "retrieval_mode",
                        "documents",
                    )
                }
                | index_chain_tags(client, manifest)
                | lineage,
            )
        mlflow.log_artifacts(str(layout.current_adapter), "adapter")
        adapter_version = reg.register_version(
            client,
            reg.ADAPTER_MODEL,
            run_id,
            "adapter",
            {
                "index_version": index_version.version,
                "index_content_hash": manifest["content_hash"],
                "base_model": adapter_config["base_model"],
                "adapter_method": adapter_config["method"],
                "fusion": adapter_config.get("fusion", "in_context"),
                "corpus_version": manifest["corpus_version"],
                "gate": "passed" if promote else "failed",
                "gate_reason": reason,
                **{f"{k}": round(v, 6) for k, v in flat_metrics.items()},
                **lineage,
            },
        )
        if promote:
            client.set_registered_model_alias(reg.ADAPTER_MODEL, p.alias, adapter_version.version)
    result = {
        "run_id": run_id,
        "registered": True,
        "index_version": index_version.version,
        "adapter_version": adapter_version.version,
        "promoted": promote,
        "alias": p.alias if promote else None,
        "reason": reason,
        "tracking_uri": p.tracking_uri,
    }
    write_json(layout.metrics / "register.json", result)
    return result


def main() -> None:
    stage_main("register", run)


if __name__ == "__main__":
    main()
