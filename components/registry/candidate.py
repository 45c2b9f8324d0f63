"""register's work for one adapter: the gate against its own champion, the linked versions, and
a refused candidate's chain sent back to an accepted version."""

from __future__ import annotations

import json
import logging
from typing import Any

from components.core.params import PipelineParams
from components.core.paths import Paths
from components.registry.naming import check_lineage

log = logging.getLogger(__name__)


def register_one(
    params: PipelineParams, paths: Paths, client: Any, names: Any, corpus: str
) -> dict[str, Any]:
    """Gate the candidate in `paths.current_adapter` against `names.adapter`'s champion and
    register it with the index; a refused candidate sends its chain back to an accepted version."""
    from components.adapters.peft_adapter import read_artifact_config
    from components.evaluation.compare import read_predictions
    from components.registry.forget import forgotten
    from components.registry.half_pairs import workspace_id
    from components.registry.lineage import lineage_tags
    from components.registry.parent import restore_accepted
    from components.registry.publish import register_pair
    from components.serving.champion import gate_candidate
    from components.stores.manifest import IndexManifest

    p = params.registration
    check_lineage(client, names, corpus)  # before the champion of another corpus is scored
    metrics = json.loads(paths.metrics_of("evaluate").read_text())
    rows = read_predictions(paths.predictions) if metrics.get("questions") else []
    budget, seed = int(metrics.get("max_new_tokens") or 0), params.model.seed  # the candidate's budget
    decision = gate_candidate(client, names, rows, p, budget, params.evaluate.batch_size, seed)
    log.info("gate of %s: %s", names.adapter, decision.reason)
    result = register_pair(
        client=client,
        metrics=metrics,
        manifest=IndexManifest.read(paths.index),
        adapter_config=read_artifact_config(paths.current_adapter),
        index=paths.index,
        adapter=paths.current_adapter,
        reports=[
            paths.evaluation_table,
            paths.metrics_of("evaluate"),
            paths.predictions,
            paths.evaluation_plots,
        ],
        lineage=lineage_tags(paths.root, paths.dvc_lock),
        decision=decision,
        alias=p.alias,
        skip_on_failure=p.on_gate_failure == "skip",
        names=names,
        corpus=corpus,
        workspace=workspace_id(paths.root),
        metric=p.gate_metric,
    )
    result["gate"] = decision.figures
    if not decision.promote and metrics.get("questions"):
        gone = forgotten(client, names)
        result["parent"] = restore_accepted(client, names.adapter, paths.current_adapter, gone)
        log.info("refused candidate of %s: %s", names.adapter, result["parent"])
    return result
