"""adapter-train: a PEFT adapter trained to answer from retrieved passages (first corpus version).

Its output persists (DVC `persist: true`): when a later corpus version arrives, the first
version's examples are unchanged, the fingerprint matches and training is skipped, so only
continual-update does work.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from typing import Any, Literal

import pandas as pd
from pydantic import Field

from components.adapters.base_model import load_base_model
from components.adapters.builder import build_retro_model, parameter_report
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
from components.training.distributed import in_launched_process, launch, make_accelerator, rank_checksums
from components.training.examples import Example, language_modelling, with_retrieval
from components.training.trainer import train


class FusionParams(StrictModel):
    """How retrieved passages reach the model (see components/adapters/retro_model.py)."""

    fusion: Literal["in_context", "cross_attention", "gated"] = "in_context"
    layers: list[int] | None = Field(None, description="decoder layers to fuse at; default upper half")
    rank: int = Field(32, ge=1)
    heads: int = Field(4, ge=1)
    gate: Literal["layer", "token"] = "layer"
    chunk_tokens: int = Field(96, ge=8, description="tokens of each chunk encoded as memory")
    memory_source: Literal["base", "embedder"] = Field(
        "base", description="chunk encodings: the frozen base model's states or the embedder's token states"
    )


class SupervisionParams(StrictModel):
    """Retrieval supervision: a reranker over the retrieved passages, pulled toward the gold one."""

    weight: float = Field(0.0, ge=0, description="weight of the reranking loss; 0 turns it off")
    rank: int = Field(64, ge=1, description="width of the reranker's projections")
    candidates: int = Field(2, ge=1, description="first-stage list = candidates x retrieval.k")


class TrainParams(StrictModel):
    method: str = Field("lora", description="any peft method name: lora, adalora, ia3, ...")
    config: dict[str, Any] = Field(default_factory=lambda: {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05})
    steps: int = Field(60, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(1e-3, gt=0)
    max_length: int = Field(384, ge=32)
    ensure_gold: bool = True
    bf16: bool = True
    fusion: FusionParams = Field(default_factory=FusionParams)
    supervision: SupervisionParams = Field(default_factory=SupervisionParams)
    objective: Literal["auto", "qa", "lm"] = Field(
        "auto",
        description="qa: train questions; lm: continue chunks from retrieved neighbours; auto: qa if any",
    )
    max_lm_examples: int = Field(512, ge=0, description="chunks sampled for the lm objective (0 = all)")
    max_trainable_share: float | None = Field(0.01, gt=0, description="budget vs base parameters")
    processes: int = Field(1, ge=1, description="data-parallel processes through `accelerate launch`")
    launcher_args: list[str] = Field(
        default_factory=list, description="extra `accelerate launch` flags, e.g. [--gpu_ids, '0,1']"
    )


def version_examples(
    params: dict[str, Any],
    layout: Layout,
    version: str,
    items: list[dict],
    seed: int,
    ensure_gold: bool = True,
    lm_chunk_ids: set[str] | None = None,
    max_lm_examples: int = 0,
    chunks: pd.DataFrame | None = None,
) -> list[Example]:
    """Training examples of one corpus version, passages retrieved from that version's chunks.

    QA items become question/answer examples; `lm_chunk_ids` (for corpora without questions)
    become continuation examples on those chunks (the unsupervised objective).
    """
    model, retrieval = load_shared(params)
    index = parse_section(IndexParams, params, "index")
    chunks = read_table(layout.chunks, "chunk") if chunks is None else chunks
    part = chunks[chunks["version"] == version].sort_values(["doc_id", "position"])
    gold = part.groupby("doc_id")["text"].apply(list).to_dict()
    retriever = version_retriever(layout, version, model, retrieval, index, chunks)
    try:
        examples = with_retrieval(items, retriever, retrieval.k, gold, ensure_gold=ensure_gold, seed=seed)
        if lm_chunk_ids:
            rows = part[part["chunk_id"].isin(lm_chunk_ids)].to_dict("records")
            examples += language_modelling(rows, retriever, retrieval.k, max_lm_examples, seed)
    finally:
        retriever.close()
    return examples


def train_items(qa: pd.DataFrame, version: str) -> list[dict]:
    return qa[(qa["version"] == version) & (qa["split"] == "train")].to_dict("records")


def artifact_config(model: ModelParams, retrieval: RetrievalParams, p: TrainParams) -> dict[str, Any]:
    return {
        "base_model": model.base,
        "embedder": model.embedder,
        "method": p.method,
        "adapter_config": p.config,
        "retrieval": retrieval.model_dump(),
        "supervision": p.supervision.model_dump(),
    }


def run(params: dict[str, Any], layout: Layout) -> dict[str, Any]:
    p = parse_section(TrainParams, params, "adapter-train")
    model_params, retrieval = load_shared(params)
    qa = read_table(layout.qa, "ingest")
    chunks = read_table(layout.chunks, "chunk")
    first = versions_in(chunks)[0]
    items = train_items(qa, first)
    objective = p.objective if p.objective != "auto" else ("qa" if items else "lm")
    if objective == "qa" and not items:
        raise ValueError(
            f"corpus version {first} has no train questions (qa.jsonl with split=train); "
            "set adapter-train.objective=lm to train on the documents alone"
        )
    lm_ids = None
    if objective == "lm":
        lm_ids = set(chunks.loc[chunks["version"] == first, "chunk_id"])
        items = []
    examples = version_examples(
        params, layout, first, items, model_params.seed, p.ensure_gold, lm_ids, p.max_lm_examples, chunks
    )
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
    if p.processes > 1 and not in_launched_process():
        if p.fusion.fusion != "in_context" or p.supervision.weight > 0:
            raise ValueError(
                "adapter-train.processes > 1 supports in_context fusion without supervision; "
                f"got fusion={p.fusion.fusion}, supervision.weight={p.supervision.weight}"
            )
        launch("components.stages.adapter_train", params, layout.root, p.processes, p.launcher_args)
        return json.loads((layout.metrics / "train.json").read_text())
    accelerator = make_accelerator() if in_launched_process() else None
    base, tokenizer = load_base_model(model_params.base, model_params.dtype)
    fusion = {
        **p.fusion.model_dump(),
        "rerank": p.supervision.weight > 0,
        "rerank_rank": p.supervision.rank,
        "memory_embedder": model_params.embedder,
    }
    model = build_retro_model(base, tokenizer, p.method, p.config, fusion, p.steps, p.max_trainable_share)
    on_step = None
    if p.method.lower() == "adalora":

        def on_step(step: int) -> None:
            model.model.base_model.update_and_allocate(step)

    counts = parameter_report(model)
    stats = train(
        model,
        examples,
        p.steps,
        p.batch_size,
        p.lr,
        p.max_length,
        model_params.seed,
        autocast_bf16=p.bf16,
        on_step=on_step,
        desc="adapter-train",
        supervision_weight=p.supervision.weight,
        accelerator=accelerator,
    )
    if accelerator is not None:
        stats["processes"] = accelerator.num_processes
        stats["rank_checksums"] = rank_checksums(accelerator, model.trainable_parameters())
        if not accelerator.is_main_process:
            return stats  # process 0 writes the adapter and the metrics
    metrics = {
        **stats,
        "examples": len(examples),
        "objective": objective,
        "version": first,
        "fusion": p.fusion.fusion,
        "trainable_params": counts["trainable"],
        "adapter_params": counts["adapter"],
        "fusion_params": counts["fusion"],
        "trainable_share": counts["trainable_share"],
        "skipped": False,
    }
    shutil.rmtree(layout.base_adapter, ignore_errors=True)
    model.save(
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
