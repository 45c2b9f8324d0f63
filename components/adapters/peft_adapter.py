"""PEFT adapters built by method name from peft's own config classes, saved as one artifact.

peft is imported where it is used: stages that only read an artifact's config start faster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.core.artifacts import check_schema

ARTIFACT_CONFIG = "retro_config.json"
ARTIFACT_SCHEMA = 1
"""Version of the artifact layout (retro_config.json and the weight files beside it)."""


def peft_config(method: str, config: dict[str, Any], total_steps: int | None = None, seq2seq: bool = False):  # noqa: ANN201
    """peft's config class for `method` (lora, adalora, ia3, or any peft type), filled from params.

    The dict goes straight into the peft class; only AdaLoRA's `total_step` is filled in from
    the training length when params leave it out.
    """
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import PeftType

    try:
        peft_type = PeftType[method.upper()]
    except KeyError:
        known = ", ".join(sorted(t.value.lower() for t in PEFT_TYPE_TO_CONFIG_MAPPING))
        raise ValueError(f"unknown adapter method {method!r}; peft knows: {known}") from None
    config = dict(config)
    config.setdefault("task_type", "SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM")
    if peft_type is PeftType.ADALORA and total_steps and not config.get("total_step"):
        config["total_step"] = total_steps
    return PEFT_TYPE_TO_CONFIG_MAPPING[peft_type](**config)


def attach_adapter(model, method: str, config: dict[str, Any], total_steps: int | None = None):  # noqa: ANN001, ANN201
    """Wrap a base model with a fresh trainable adapter."""
    from peft import get_peft_model

    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    return get_peft_model(model, peft_config(method, config, total_steps, seq2seq))


def read_artifact_config(folder: Path, check: bool = True) -> dict[str, Any]:
    """The artifact's retro_config.json; refused (SchemaMismatch) when another schema wrote it."""
    path = Path(folder) / ARTIFACT_CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{folder} is not a Retro-PEFT adapter artifact (no {ARTIFACT_CONFIG})")
    config = json.loads(path.read_text())
    if check:
        check_schema(
            config.get("schema_version"),
            ARTIFACT_SCHEMA,
            f"adapter artifact {folder}",
            "train it again (`dvc repro -f adapter-train continual-update`)",
        )
    return config


def load_artifact(folder: Path, base_model, trainable: bool = False, adapter_name: str = "default"):  # noqa: ANN001, ANN201
    """Put a saved adapter onto its (already loaded) base model, named `adapter_name`."""
    from peft import PeftModel

    return PeftModel.from_pretrained(
        base_model, str(folder), adapter_name=adapter_name, is_trainable=trainable
    )
