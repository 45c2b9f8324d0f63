"""continual-update: update the previous adapter on each newer corpus version, with bounded replay.

The output folder persists between runs (DVC `persist: true`) and holds the current adapter, the
replay reservoir and the versions already learned, so an update costs the size of the new
version, not of the history.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field

from components.adapters.builder import load_retro_model
from components.adapters.peft_adapter import read_artifact_config
from components.config import StrictModel, parse_section
from components.continual.regularizers import OnlineEWC
from components.continual.replay import ReplayBuffer
from components.continual.update import UpdateOptions, unchanged_pairs, update_adapter
from components.stages.adapter_train import TrainParams, train_items, version_examples
from components.stages.common import (
    Layout,
    ModelParams,
    load_shared,
    read_table,
    stage_main,
    versions_in,
    write_json,
)
from components.training.examples import Example

STATE = "state.json"
REPLAY = "replay.json"


class ContinualParams(StrictModel):
    steps: int = Field(30, ge=1, description="optimiser steps per new corpus version")
    lr: float = Field(5e-4, gt=0)
    replay_size: int = Field(64, ge=0, description="fixed reservoir size (examples)")
    replay_ratio: float = Field(0.5, ge=0, lt=1, description="share of each batch drawn from replay")
    ewc_weight: float = Field(0.0, ge=0, description="online EWC penalty weight (0: off)")
    ewc_gamma: float = Field(0.9, gt=0, le=1, description="decay of the running Fisher estimate")
    ewc_batches: int = Field(8, ge=1, description="batches used to estimate the Fisher after an update")
    distill_weight: float = Field(0.0, ge=0, description="distillation from the previous version (0: off)")
    distill_top_k: int = Field(16, ge=1, description="tokens kept per answer position of the teacher")


def folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")):  # adapter and fusion weights
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def adapter_bytes(folder: Path) -> int:
    """Size of the adapter and fusion weights (the EWC state beside them is counted apart)."""
    return sum(f.stat().st_size for f in folder.glob("*.safetensors") if f.name != OnlineEWC.FILE)


def new_knowledge(qa: pd.DataFrame, previous: str, version: str) -> list[dict]:
    """Train items of `version` that are new or whose answer changed since `previous`."""
    before = dict(
        zip(
            qa.loc[qa["version"] == previous, "id"],
            qa.loc[qa["version"] == previous, "answer"],
            strict=True,
        )
    )
    return [it for it in train_items(qa, version) if before.get(it["id"]) != it["answer"]]


def run(params: dict[str, Any], layout: Layout) -> dict[str, Any]:
    p = parse_section(ContinualParams, params, "continual-update")
    train_params = parse_section(TrainParams, params, "adapter-train")
    model_params, _ = load_shared(params)
    qa = read_table(layout.qa, "ingest")
    chunks = read_table(layout.chunks, "chunk")
    versions = versions_in(chunks)
    out = layout.current_adapter
    base_hash = folder_hash(layout.base_adapter)
    state = json.loads((out / STATE).read_text()) if (out / STATE).exists() else {}
    if state.get("base_adapter") != base_hash or state.get("consumed", [None])[-1] not in versions:
        # a new base adapter (or a different corpus): start the chain again from it
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(layout.base_adapter, out)
        state = {"base_adapter": base_hash, "consumed": [versions[0]], "updates": []}
        buffer = ReplayBuffer(p.replay_size, model_params.seed)
        for item in train_items(qa, versions[0]):
            buffer.add(item)
    else:
        buffer = ReplayBuffer.load(out / REPLAY, p.replay_size, model_params.seed)
    pending = versions[versions.index(state["consumed"][-1]) + 1 :]
    for version in pending:
        previous = state["consumed"][-1]
        current = {
            it["id"]: it for it in qa[qa["version"] == version].to_dict("records") if it["split"] == "train"
        }
        unchanged = unchanged_pairs(buffer.items)
        revised = buffer.refresh(current)
        fresh = new_knowledge(qa, previous, version)
        record = {
            "version": version,
            "new_examples": len(fresh),
            "replay_revised": revised,
            "replay_size": len(buffer.items),
        }
        lm_ids = None
        if not fresh and train_params.objective != "qa":  # documents only: learn the new chunks
            by_version = chunks.groupby("version")["chunk_id"].apply(set)
            lm_ids = by_version.get(version, set()) - by_version.get(previous, set())
        if fresh or lm_ids:
            examples = version_examples(
                params,
                layout,
                version,
                fresh + buffer.items,
                model_params.seed,
                lm_chunk_ids=lm_ids,
                max_lm_examples=train_params.max_lm_examples,
                chunks=chunks,
            )
            n_old = len(fresh) + len(buffer.items)
            new, replay = examples[: len(fresh)] + examples[n_old:], examples[len(fresh) : n_old]
            record["new_examples"] = len(new)
            record.update(_update_adapter(out, model_params, train_params, p, new, replay, unchanged))
        for item in fresh:
            buffer.add(item)
        state["consumed"].append(version)
        state["updates"].append(record)
        buffer.save(out / REPLAY)
        (out / STATE).write_text(json.dumps(state, indent=2))
    buffer.save(out / REPLAY)
    (out / STATE).write_text(json.dumps(state, indent=2))
    metrics = {
        "versions_learned": state["consumed"],
        "updates_this_run": len(pending),
        "replay_size": len(buffer.items),
        "adapter_bytes": adapter_bytes(out),
        "regularizer_bytes": (out / OnlineEWC.FILE).stat().st_size if (out / OnlineEWC.FILE).exists() else 0,
        "last_update": state["updates"][-1] if state["updates"] else None,
    }
    write_json(layout.metrics / "continual.json", metrics)
    return metrics


def _update_adapter(
    out: Path,
    model_params: ModelParams,
    train_params: TrainParams,
    p: ContinualParams,
    new: list[Example],
    replay: list[Example],
    unchanged: set[tuple[str, str]],
) -> dict[str, Any]:
    """Fine-tune the adapter in `out` (not from scratch) and replace it atomically; the online
    EWC estimate, when on, persists beside the adapter."""
    model = load_retro_model(out, trainable=True)
    ewc = OnlineEWC.load(out, p.ewc_weight, p.ewc_gamma) if p.ewc_weight else None
    options = UpdateOptions(
        steps=p.steps,
        lr=p.lr,
        batch_size=train_params.batch_size,
        max_length=train_params.max_length,
        seed=model_params.seed,
        bf16=train_params.bf16,
        replay_ratio=p.replay_ratio,
        distill_weight=p.distill_weight,
        distill_top_k=p.distill_top_k,
        ewc_batches=p.ewc_batches,
        supervision_weight=train_params.supervision.weight,
    )
    stats = update_adapter(model, new, replay, options, ewc, unchanged)
    staging = out.with_name(out.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    model.save(staging, read_artifact_config(out))
    if ewc is not None:
        ewc.save(staging)
    for path in staging.iterdir():
        path.replace(out / path.name)
    staging.rmdir()
    return {"seconds": stats["seconds"], "final_loss": stats["final_loss"]}


def main() -> None:
    stage_main("continual-update", run)


if __name__ == "__main__":
    main()
