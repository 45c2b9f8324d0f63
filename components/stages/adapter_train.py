"""adapter-train: a PEFT adapter trained to answer from retrieved passages (first corpus version).

Its output persists (DVC `persist: true`): when a later corpus version arrives, the first
version's examples are unchanged, the fingerprint matches and training is skipped, so only
continual-update does work.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from typing import Any

import pandas as pd
from pydantic import Field

from components.adapters.base_model import load_base_model
from components.adapters.peft_adapter import attach_adapter, count_parameters, save_artifact
from components.config import StrictModel, parse_section
from components.stages.common import (
    Layout,
    ModelParams,
    RetrievalParams,
    load_shared,
    read_table,
    stage_main,
    versions_in,
    write_json,
)
from components.stages.index import IndexParams, version_retriever
from components.training.examples import Example, with_retrieval
from components.training.trainer import train


class TrainParams(StrictModel):
    method: str = Field("lora", description="any peft method name: lora, adalora, ia3, ...")
    config: dict[str, Any] = Field(default_factory=lambda: {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05})
    steps: int = Field(60, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(1e-3, gt=0)
    max_length: int = Field(384, ge=32)
    ensure_gold: bool = True
    bf16: bool = True


def version_examples(
    params: dict[str, Any],
    layout: Layout,
    version: str,
    items: list[dict],
    seed: int,
    ensure_gold: bool = True,
) -> list[Example]:
    """QA items of one corpus version with passages retrieved from that version's chunks."""
    model, retrieval = load_shared(params)
    index = parse_section(IndexParams, params, "index")
    chunks = read_table(layout.chunks, "chunk")
    part = chunks[chunks["version"] == version].sort_values(["doc_id", "position"])
    gold = part.groupby("doc_id")["text"].apply(list).to_dict()
    retriever = version_retriever(layout, version, model, retrieval, index, chunks)
    return with_retrieval(items, retriever, retrieval.k, gold, ensure_gold=ensure_gold, seed=seed)


def train_items(qa: pd.DataFrame, version: str) -> list[dict]:
    return qa[(qa["version"] == version) & (qa["split"] == "train")].to_dict("records")


def artifact_config(model: ModelParams, retrieval: RetrievalParams, p: TrainParams) -> dict[str, Any]:
    return {
        "base_model": model.base,
        "embedder": model.embedder,
        "method": p.method,
        "adapter_config": p.config,
        "retrieval": retrieval.model_dump(),
        "fusion": "in_context",
    }


def run(params: dict[str, Any], layout: Layout) -> dict[str, Any]:
    p = parse_section(TrainParams, params, "adapter-train")
    model_params, retrieval = load_shared(params)
    qa = read_table(layout.qa, "ingest")
    first = versions_in(qa)[0]
    items = train_items(qa, first)
    if not items:
        raise ValueError(
            f"corpus version {first} has no train questions: qa.jsonl with split=train is needed"
        )
    examples = version_examples(params, layout, first, items, model_params.seed, p.ensure_gold)
    fingerprint = hashlib.sha256(
        json.dumps(
            [
                p.model_dump(),
                model_params.model_dump(),
                retrieval.model_dump(),
                [e.to_dict() for e in examples],
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    previous = layout.base_adapter / "retro_config.json"
    if previous.exists() and json.loads(previous.read_text()).get("fingerprint") == fingerprint:
        # same data, params and model as the adapter already there: nothing to train
        metrics = {**json.loads(previous.read_text())["training"], "skipped": True}
        write_json(layout.metrics / "train.json", metrics)
        return metrics
    base, tokenizer = load_base_model(model_params.base, model_params.dtype)
    model = attach_adapter(base, p.method, p.config, total_steps=p.steps)
    on_step = None
    if p.method.lower() == "adalora":

        def on_step(step: int) -> None:
            model.base_model.update_and_allocate(step)

    counts = count_parameters(model)
    stats = train(
        model,
        tokenizer,
        examples,
        p.steps,
        p.batch_size,
        p.lr,
        p.max_length,
        model_params.seed,
        autocast_bf16=p.bf16,
        on_step=on_step,
        desc="adapter-train",
    )
    metrics = {
        **stats,
        "examples": len(examples),
        "version": first,
        "trainable_params": counts["trainable"],
        "trainable_share": counts["trainable"] / counts["total"],
        "skipped": False,
    }
    shutil.rmtree(layout.base_adapter, ignore_errors=True)
    save_artifact(
        model,
        layout.base_adapter,
        {
            **artifact_config(model_params, retrieval, p),
            "trained_on_versions": [first],
            "fingerprint": fingerprint,
            "training": metrics,
        },
    )
    write_json(layout.metrics / "train.json", metrics)
    return metrics


def main() -> None:
    stage_main("adapter-train", run)


if __name__ == "__main__":
    main()
