"""The chain of adapter versions the continual-update stage keeps: the current adapter, its
fixed-size replay reservoir, and the corpus versions already learned.

The folder persists between runs, so an update costs the size of the new version, not of the
history. A new base adapter (or a different corpus) starts the chain again from it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from components.continual.regularizers import OnlineEWC
from components.continual.replay import RESERVOIR_FILE, ReplayBuffer
from components.continual.update import UpdateOptions, unchanged_pairs, update_adapter
from components.core.artifacts import staged_swap
from components.core.params import ContinualParams, ModelParams, TrainParams
from components.training.examples import Example, new_knowledge, train_items

if TYPE_CHECKING:
    from components.adapters.kv_index import KVFolder

STATE = "state.json"
REPLAY = RESERVOIR_FILE

ExamplesFor = Callable[[str, list[dict], "set[str] | None"], list[Example]]
"""(version, QA items, chunk ids for the lm objective) -> training examples with retrieval."""


def weights_hash(folder: Path) -> str:
    """A short hash over the adapter and fusion weight files of an artifact folder."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def adapter_bytes(folder: Path) -> int:
    """Size of the adapter and fusion weights (the EWC state beside them is counted apart)."""
    return sum(f.stat().st_size for f in folder.glob("*.safetensors") if f.name != OnlineEWC.FILE)


class AdapterChain:
    """The current adapter in `out`, the versions it has learned and its replay reservoir."""

    def __init__(self, out: Path, state: dict[str, Any], buffer: ReplayBuffer) -> None:
        self.out, self.state, self.buffer = out, state, buffer

    @classmethod
    def open(
        cls, out: Path, base: Path, versions: list[str], qa: pd.DataFrame, replay_size: int, seed: int
    ) -> AdapterChain:
        """Resume the chain in `out`, or start it from the base adapter when that changed."""
        base_hash = weights_hash(base)
        state = json.loads((out / STATE).read_text()) if (out / STATE).exists() else {}
        if state.get("base_adapter") == base_hash and state.get("consumed", [None])[-1] in versions:
            return cls(out, state, ReplayBuffer.load(out / REPLAY, replay_size, seed))
        with staged_swap(out) as staging:
            shutil.copytree(base, staging)
        buffer = ReplayBuffer(replay_size, seed)
        for item in train_items(qa, versions[0]):
            buffer.add(item)
        return cls(out, {"base_adapter": base_hash, "consumed": [versions[0]], "updates": []}, buffer)

    def pending(self, versions: list[str]) -> list[str]:
        """The corpus versions after the last one learned."""
        return versions[versions.index(self.state["consumed"][-1]) + 1 :]

    def learn(
        self,
        version: str,
        qa: pd.DataFrame,
        chunks: pd.DataFrame,
        examples_for: ExamplesFor,
        update: Callable[[list[Example], list[Example], set[tuple[str, str]]], dict[str, Any]],
        lm_fallback: bool,
    ) -> None:
        """Update the adapter on the new and revised facts of `version`, with replay; without new
        questions and with `lm_fallback`, on the version's new chunks (the documents objective)."""
        previous = self.state["consumed"][-1]
        current = {
            it["id"]: it for it in qa[qa["version"] == version].to_dict("records") if it["split"] == "train"
        }
        unchanged = unchanged_pairs(self.buffer.items)
        revised = self.buffer.refresh(current)
        fresh = new_knowledge(qa, previous, version)
        record = {
            "version": version,
            "new_examples": len(fresh),
            "replay_revised": revised,
            "replay_size": len(self.buffer.items),
        }
        lm_ids = None
        if not fresh and lm_fallback:
            by_version = chunks.groupby("version")["chunk_id"].apply(set)
            lm_ids = by_version.get(version, set()) - by_version.get(previous, set())
        if fresh or lm_ids:
            examples = examples_for(version, fresh + self.buffer.items, lm_ids)
            n_old = len(fresh) + len(self.buffer.items)
            new, replay = examples[: len(fresh)] + examples[n_old:], examples[len(fresh) : n_old]
            record["new_examples"] = len(new)
            record.update(update(new, replay, unchanged))
        for item in fresh:
            self.buffer.add(item)
        self.state["consumed"].append(version)
        self.state["updates"].append(record)
        self.save()

    def save(self) -> None:
        """Write the replay buffer and the chain's state to its folder."""
        self.buffer.save(self.out / REPLAY)
        (self.out / STATE).write_text(json.dumps(self.state, indent=2))

    def summary(self, updates_this_run: int) -> dict[str, Any]:
        """Figures of the chain after an update run, for the stage's metrics."""
        ewc = self.out / OnlineEWC.FILE
        return {
            "versions_learned": self.state["consumed"],
            "updates_this_run": updates_this_run,
            "replay_size": len(self.buffer.items),
            "adapter_bytes": adapter_bytes(self.out),
            "regularizer_bytes": ewc.stat().st_size if ewc.exists() else 0,
            "last_update": self.state["updates"][-1] if self.state["updates"] else None,
        }


def update_in_place(
    out: Path,
    model_params: ModelParams,
    train_params: TrainParams,
    p: ContinualParams,
    new: list[Example],
    replay: list[Example],
    unchanged: set[tuple[str, str]],
    kv_folder: KVFolder | None = None,
) -> dict[str, Any]:
    """Fine-tune the adapter in `out` (not from scratch) and replace it atomically; the online
    EWC estimate, when on, persists beside the adapter. kv and gated fusion use `kv_folder`."""
    from components.adapters.builder import load_retro_model
    from components.adapters.peft_adapter import read_artifact_config
    from components.adapters.precision import LoadOptions
    from components.continual.anchors import general_anchors

    model = load_retro_model(out, trainable=True, options=LoadOptions.from_params(model_params))
    if kv_folder is not None:
        kv_folder.attach(model)
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
    )
    anchors = general_anchors(model, p.general_anchors)  # the base model's answers: the adapter off
    stats = update_adapter(model, new, replay + anchors, options, ewc, unchanged)
    with staged_swap(out) as staging:  # the chain's folder, whole, with the new weights in it
        shutil.copytree(out, staging)
        model.save(staging, read_artifact_config(out))
        if ewc is not None:
            ewc.save(staging)
    return {"seconds": stats["seconds"], "final_loss": stats["final_loss"]}
