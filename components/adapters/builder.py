"""Build a RetroModel (adapter + fusion) from params, check its parameter budget, load it back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.adapters.base_model import load_base_model
from components.adapters.peft_adapter import attach_adapter, load_artifact, read_artifact_config
from components.adapters.precision import LoadOptions
from components.adapters.retro_model import RetroModel, unwrap


class BudgetExceeded(ValueError):
    """The adapter and fusion blocks train more parameters than the configured share allows."""


def parameter_report(model: RetroModel) -> dict[str, float]:
    """Trainable adapter and fusion parameters against the base model's own count."""
    fusion = sum(p.numel() for p in model.fusion.parameters())
    adapter = sum(p.numel() for p in unwrap(model.model).parameters() if p.requires_grad)
    frozen_base = sum(p.numel() for p in unwrap(model.model).parameters() if not p.requires_grad)
    trainable = adapter + fusion
    return {
        "trainable": trainable,
        "adapter": adapter,
        "fusion": fusion,
        "base": frozen_base,
        "trainable_share": trainable / max(1, frozen_base),
    }


def build_retro_model(
    base: Any,
    tokenizer: Any,
    method: str,
    config: dict[str, Any],
    fusion: dict[str, Any] | None = None,
    total_steps: int | None = None,
    max_trainable_share: float | None = 0.01,
) -> RetroModel:
    """Attach a fresh peft adapter and fusion blocks; refuse a model over the parameter budget."""
    model = RetroModel(attach_adapter(base, method, config, total_steps), tokenizer, **(fusion or {}))
    report = parameter_report(model)
    if max_trainable_share is not None and report["trainable_share"] > max_trainable_share:
        raise BudgetExceeded(
            f"{report['trainable']:,} trainable parameters ({report['adapter']:,} adapter + "
            f"{report['fusion']:,} fusion) are {report['trainable_share']:.2%} of the base model's "
            f"{report['base']:,}, over the budget of {max_trainable_share:.2%} "
            "(adapter-train.max_trainable_share)"
        )
    return model


LOW_RANK_BLOCK_KEYS = ("layers", "rank", "heads", "memory_source", "memory_embedder")


def current_fusion_settings(folder: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """An artifact's saved fusion settings in today's form; artifacts of retired parts are
    refused with what to do (their weights mean nothing to today's model)."""
    settings = dict(settings)
    if settings.pop("rerank", False):
        raise ValueError(
            f"{folder} was trained with the adapter's own reranker (adapter-train.supervision), which "
            "is gone: retrain it (dvc repro -f adapter-train); retrieval.rerank reranks at the index"
        )
    fusion = settings.get("fusion", "in_context")
    if fusion == "cross_attention" or (fusion == "gated" and "rank" in settings):
        raise ValueError(
            f"{folder} uses the retired low-rank {fusion} block: retrain it with fusion kv or gated "
            '(dvc repro -f adapter-train); README "Which fusion to choose"'
        )
    kv_gate = settings.pop("kv_gate", "none")
    if fusion == "kv" and kv_gate != "none":  # kv with a gate is now called gated
        settings |= {"fusion": "gated", "gate": kv_gate}
    elif fusion == "in_context" or "rank" in settings:
        settings.pop("gate", None)  # the low-rank block's gate (layer | token), unused here
    for key in (*LOW_RANK_BLOCK_KEYS, "rerank_rank"):
        settings.pop(key, None)
    return settings


def load_retro_model(
    folder: Path,
    trainable: bool = False,
    base_model: str | None = None,
    adapter_name: str = "default",
    options: LoadOptions | None = None,
) -> RetroModel:
    """Base model + adapter (as peft's `adapter_name`) + fusion weights from one artifact folder;
    the base model loads as `options` say (default: float32 on the CPU)."""
    config = read_artifact_config(folder)
    settings = current_fusion_settings(folder, config.get("fusion_settings", {}))
    base, tokenizer = load_base_model(base_model or config["base_model"], options=options)
    model = RetroModel(load_artifact(folder, base, trainable, adapter_name), tokenizer, **settings)
    model.load_fusion(folder)
    model.artifact_config = config
    for p in model.fusion.parameters():
        p.requires_grad_(trainable)
    model.eval()
    return model


def export_merged(folder: Path, out: Path) -> Path:
    """Fold a LoRA/IA3 adapter into the base weights and save a plain transformers model.

    Only for in_context artifacts: reading chunks as key/values (kv, gated) is a way of running
    the model, not a weight delta, so it cannot be merged away.
    """
    model = load_retro_model(folder)
    if model.uses_memory:
        raise ValueError(f"{folder} uses {model.fusion_mode} fusion; only in_context adapters can be merged")
    merged = model.model.merge_and_unload()
    out = Path(out)
    merged.save_pretrained(out, safe_serialization=True)
    model.tokenizer.save_pretrained(out)
    return out
