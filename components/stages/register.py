"""register: the index snapshot and the adapter as linked MLflow versions; gate to `challenger`."""

from __future__ import annotations

import json
from typing import Any

from components.core.params import PipelineParams
from components.core.paths import Paths
from components.stages.entry import stage_main


def run(params: PipelineParams, paths: Paths) -> dict[str, Any]:
    from components.adapters.peft_adapter import read_artifact_config
    from components.registry import mlflow_registry as reg
    from components.registry.lineage import lineage_tags
    from components.registry.publish import register_pair
    from components.stores.manifest import IndexManifest

    p = params.registration
    result = register_pair(
        client=reg.configure(p.tracking_uri),
        metrics=json.loads(paths.metrics_of("evaluate").read_text()),
        manifest=IndexManifest.read(paths.index),
        adapter_config=read_artifact_config(paths.current_adapter),
        index=paths.index,
        adapter=paths.current_adapter,
        reports=[paths.evaluation_table, paths.metrics_of("evaluate"), paths.predictions],
        lineage=lineage_tags(paths.root, paths.dvc_lock),
        gate_metric=p.gate_metric,
        min_gain=p.min_gain,
        alias=p.alias,
        skip_on_failure=p.on_gate_failure == "skip",
    )
    return {**result, "tracking_uri": p.tracking_uri}


def main() -> None:
    stage_main("register", run)


if __name__ == "__main__":
    main()
