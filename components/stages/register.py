"""register: the gate, then the index snapshot and the adapter as linked MLflow versions.

The champion lives in the registry, which DVC cannot track, so it is scored here: this stage runs
whenever there is a new candidate (its evaluation or its adapter changed). The candidate and plain
RAG come from evaluate's predictions; the champion answers the same questions as it is served
(its adapter with its own linked index). A refused candidate is not a parent: the continual chain
goes back to the champion or the newest accepted version (components/registry/parent.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from components.core.params import PipelineParams
from components.core.paths import Paths
from components.registry.naming import check_lineage, corpus_identity, registry_name
from components.stages.entry import stage_main

log = logging.getLogger(__name__)


def run(params: PipelineParams, paths: Paths) -> dict[str, Any]:
    from components.adapters.peft_adapter import read_artifact_config
    from components.evaluation.compare import read_predictions
    from components.registry import mlflow_registry as reg
    from components.registry.forget import forgotten
    from components.registry.lineage import lineage_tags
    from components.registry.parent import restore_accepted
    from components.registry.publish import register_pair
    from components.serving.champion import gate_candidate
    from components.stores.manifest import IndexManifest

    p = params.registration
    client = reg.configure(p.tracking_uri)
    names = registry_name(p.model_name, params.ingest.source, paths.root)
    corpus = corpus_identity(params.ingest.source, paths.root)
    check_lineage(client, names, corpus)  # before the champion of another corpus is scored
    metrics = json.loads(paths.metrics_of("evaluate").read_text())
    rows = read_predictions(paths.predictions) if metrics.get("questions") else []
    budget, seed = int(metrics.get("max_new_tokens") or 0), params.model.seed  # the candidate's budget
    decision = gate_candidate(client, names, rows, p, budget, params.evaluate.batch_size, seed)
    log.info("gate: %s", decision.reason)
    result = register_pair(
        client=client,
        metrics=metrics,
        manifest=IndexManifest.read(paths.index),
        adapter_config=read_artifact_config(paths.current_adapter),
        index=paths.index,
        adapter=paths.current_adapter,
        reports=[paths.evaluation_table, paths.metrics_of("evaluate"), paths.predictions],
        lineage=lineage_tags(paths.root, paths.dvc_lock),
        decision=decision,
        alias=p.alias,
        skip_on_failure=p.on_gate_failure == "skip",
        names=names,
        corpus=corpus,
    )
    result["gate"] = decision.figures
    if not decision.promote and metrics.get("questions"):
        gone = forgotten(client, names)
        result["parent"] = restore_accepted(client, names.adapter, paths.current_adapter, gone)
        log.info("refused candidate: %s", result["parent"])
    return {**result, "tracking_uri": p.tracking_uri}


def main() -> None:
    stage_main("register", run)


if __name__ == "__main__":
    main()
