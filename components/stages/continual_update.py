"""continual-update: update the previous adapter on each newer corpus version, with bounded replay.

The output folder persists between runs (DVC `persist: true`) and holds the current adapter, the
replay reservoir and the versions already learned (components/continual/chain.py).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from components.adapters.kv_index import KVFolder
from components.continual.chain import AdapterChain, update_in_place
from components.core.artifacts import read_table, versions_in
from components.core.params import PipelineParams
from components.core.paths import Paths
from components.data.chunking import read_chunks
from components.stages.entry import stage_main
from components.training.examples import Example, examples_of_version


def run(params: PipelineParams, paths: Paths) -> dict[str, Any]:
    p, train_p, model = params.continual_update, params.adapter_train, params.model
    qa, chunks = read_table(paths.questions, "synthesize"), read_chunks(paths.chunks)
    versions = versions_in(chunks)
    chain = AdapterChain.open(
        paths.current_adapter, paths.base_adapter, versions, qa, p.replay_size, model.seed
    )

    def examples_for(version: str, items: list[dict], lm_ids: set[str] | None) -> list[Example]:
        return examples_of_version(params, paths, chunks, version, items, lm_ids)

    kv_folder = KVFolder(paths.chunk_kv, params.index.chunk_kv_budget_gb)
    update = partial(update_in_place, chain.out, model, train_p, p, kv_folder=kv_folder)
    pending = chain.pending(versions)
    for version in pending:
        chain.learn(version, qa, chunks, examples_for, update, lm_fallback=train_p.objective != "qa")
    chain.save()
    return chain.summary(len(pending))


def main() -> None:
    stage_main("continual-update", run)


if __name__ == "__main__":
    main()
