"""adapter-train: a PEFT adapter trained to answer from retrieved passages (first corpus version).

Its output persists (DVC `persist: true`): when a later corpus version arrives, the first
version's examples are unchanged, the fingerprint matches and training is skipped, so only
continual-update does work.
"""

from __future__ import annotations

import json
from typing import Any

from components.adapters.kv_index import KVFolder
from components.core.artifacts import read_table, versions_in
from components.core.params import PipelineParams
from components.core.paths import Paths
from components.data.chunking import read_chunks
from components.stages.entry import stage_main
from components.training.distributed import in_launched_process, launch
from components.training.examples import examples_of_version, first_version_objective
from components.training.recipe import already_trained, train_adapter, training_fingerprint


def run(params: PipelineParams, paths: Paths) -> dict[str, Any] | None:
    p, model, retrieval = params.adapter_train, params.model, params.retrieval
    qa, chunks = read_table(paths.questions, "synthesize"), read_chunks(paths.chunks)
    first = versions_in(chunks)[0]
    objective, items, lm_ids = first_version_objective(p.objective, qa, chunks, first)
    examples = examples_of_version(params, paths, chunks, first, items, lm_ids, p.ensure_gold)
    fingerprint = training_fingerprint(p, model, retrieval, examples)
    if (done := already_trained(paths.base_adapter, fingerprint)) is not None:
        return done  # same data, params and model as the adapter already there
    if p.processes > 1 and not in_launched_process():
        if p.fusion.fusion != "in_context":
            raise ValueError(
                f"adapter-train.processes > 1 supports in_context fusion; got fusion={p.fusion.fusion}"
            )
        launch("components.stages.adapter_train", params.raw, paths.root, p.processes, p.launcher_args)
        return json.loads(paths.metrics_of("adapter-train").read_text())
    return train_adapter(
        examples,
        p,
        model,
        retrieval,
        paths.base_adapter,
        fingerprint=fingerprint,
        version=first,
        objective=objective,
        kv_folder=KVFolder(paths.chunk_kv, params.index.chunk_kv_budget_gb),
    )


def main() -> None:
    stage_main("adapter-train", run)


if __name__ == "__main__":
    main()
