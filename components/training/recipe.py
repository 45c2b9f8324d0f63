"""Training the first adapter: fingerprint the inputs, build base + adapter + fusion, train, save.

An adapter whose fingerprint (params, model, retrieval settings and every training example)
matches the one on disk is not trained again.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.adapters.peft_adapter import ARTIFACT_CONFIG, ARTIFACT_SCHEMA
from components.core.artifacts import staged_swap
from components.core.params import ModelParams, RetrievalParams, TrainParams
from components.training.budget import EarlyStopping, planned_steps, split_validation
from components.training.examples import Example

if TYPE_CHECKING:
    from components.adapters.kv_index import KVFolder


def training_fingerprint(
    p: TrainParams, model: ModelParams, retrieval: RetrievalParams, examples: list[Example]
) -> str:
    """A short hash of everything that decides the trained weights."""
    parts = [p.model_dump(), model.model_dump(), retrieval.model_dump(), [e.to_dict() for e in examples]]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def already_trained(folder: Path, fingerprint: str) -> dict[str, Any] | None:
    """The training metrics of the adapter in `folder` when it was trained from the same inputs
    (and written with this artifact schema); None when it must be trained."""
    path = Path(folder) / ARTIFACT_CONFIG
    if not path.exists():
        return None
    config = json.loads(path.read_text())
    if config.get("fingerprint") != fingerprint or config.get("schema_version") != ARTIFACT_SCHEMA:
        return None
    return {**config["training"], "skipped": True}


def artifact_config(model: ModelParams, retrieval: RetrievalParams, p: TrainParams) -> dict[str, Any]:
    """What an adapter artifact records about how it was made (retro_config.json)."""
    return {
        "base_model": model.base,
        "embedder": model.embedder,
        "method": p.method,
        "adapter_config": p.config,
        "retrieval": retrieval.model_dump(),
    }


def train_adapter(
    examples: list[Example],
    p: TrainParams,
    model_params: ModelParams,
    retrieval: RetrievalParams,
    out: Path,
    *,
    fingerprint: str,
    version: str,
    objective: str,
    kv_folder: KVFolder | None = None,
    domain: str | None = None,
) -> dict[str, Any] | None:
    """Train a new adapter on `examples` of corpus `version` and save it to `out` (kv and gated
    fusion read and fill the chunk key/values in `kv_folder`). A `domain` adapter records its
    domain in the artifact: whoever loads it retrieves that domain's passages only.

    Inside an `accelerate launch` every process trains; only process 0 saves and returns the
    metrics (the others return None).
    """
    from components.adapters.base_model import load_base_model
    from components.adapters.builder import build_retro_model, parameter_report
    from components.adapters.precision import LoadOptions
    from components.training.distributed import in_launched_process, make_accelerator, rank_checksums
    from components.training.trainer import train

    accelerator = make_accelerator() if in_launched_process() else None
    # early stopping needs one view of the validation loss: not across data-parallel processes
    share = p.validation_share if accelerator is None else 0.0
    train_set, validation = split_validation(examples, share, model_params.seed)
    steps, steps_source = planned_steps(p.epochs, p.steps, len(train_set), p.batch_size)
    per_epoch = max(1, math.ceil(len(train_set) / p.batch_size))
    stopper = (
        EarlyStopping(validation, every=max(1, per_epoch // 2), patience=p.patience) if validation else None
    )
    base, tokenizer = load_base_model(model_params.base, options=LoadOptions.from_params(model_params))
    fusion = p.fusion.model_dump()
    model = build_retro_model(base, tokenizer, p.method, p.config, fusion, steps, p.max_trainable_share)
    if kv_folder is not None:
        kv_folder.attach(model)
    on_step = None
    if p.method.lower() == "adalora":

        def on_step(step: int) -> None:
            model.model.base_model.update_and_allocate(step)

    counts = parameter_report(model)
    stats = train(
        model,
        train_set,
        steps,
        p.batch_size,
        p.lr,
        p.max_length,
        model_params.seed,
        autocast_bf16=p.bf16,
        on_step=on_step,
        desc="adapter-train",
        accelerator=accelerator,
        early_stopping=stopper,
    )
    if accelerator is not None:
        stats["processes"] = accelerator.num_processes
        stats["rank_checksums"] = rank_checksums(accelerator, model.trainable_parameters())
        if not accelerator.is_main_process:
            return None  # process 0 writes the adapter and the metrics
    metrics = {
        **stats,
        "examples": len(examples),
        "train_examples": len(train_set),
        "steps_source": steps_source,
        "epochs_run": round(stats["steps"] * p.batch_size / len(train_set), 3),
        "fusion": p.fusion.fusion,
        "trainable_params": counts["trainable"],
        "adapter_params": counts["adapter"],
        "fusion_params": counts["fusion"],
        "trainable_share": counts["trainable_share"],
        "objective": objective,
        "version": version,
        "skipped": False,
    }
    config = artifact_config(model_params, retrieval, p) | ({"domain": domain} if domain else {})
    with staged_swap(out) as staging:  # the previous adapter stays whole until this one is
        model.save(
            staging,
            {**config, "trained_on_versions": [version], "fingerprint": fingerprint, "training": metrics},
        )
    return metrics
