"""register: the gate, then the index snapshot and the adapter as linked MLflow versions (with
per-domain adapters, each as `<name>-adapter-<domain>`, gated against its own champion).

The champion lives in the registry, which DVC cannot track, so it is scored here: this stage runs
whenever there is a new candidate (its evaluation or its adapter changed). The candidate and plain
RAG come from evaluate's predictions; the champion answers the same questions as it is served
(its adapter with its own linked index). A refused candidate is not a parent: the continual chain
goes back to the champion or the newest accepted version (components/registry/parent.py).
"""

from __future__ import annotations

from typing import Any

from components.core.params import PipelineParams
from components.core.paths import Paths
from components.registry.candidate import register_one
from components.registry.naming import corpus_identity, registry_name
from components.stages.entry import stage_main


def run(params: PipelineParams, paths: Paths) -> dict[str, Any]:
    """Run the register stage: log the candidate pair to MLflow and apply the gate."""
    from components.data.domains import read_domains
    from components.registry import mlflow_registry as reg
    from components.registry.half_pairs import release_half_pairs, workspace_id

    p = params.registration
    client = reg.configure(p.tracking_uri)
    names = registry_name(p.model_name, params.ingest.source, paths.root)
    corpus = corpus_identity(params.ingest.source, paths.root)
    released = release_half_pairs(client, names, workspace_id(paths.root))  # a killed register's
    result = register_one(params, paths, client, names, corpus)
    domains = read_domains(paths.domain_adapters)
    if domains:  # each domain's adapter: its own gate, champion and alias, the same index
        result["domains"] = {
            d: register_one(params, paths.for_domain(d), client, names.of_domain(d), corpus) for d in domains
        }
    return {**result, "tracking_uri": p.tracking_uri, **({"released": released} if released else {})}


def main() -> None:
    """Command-line entry of the register stage (`python -m components.stages.register`)."""
    stage_main("register", run)


if __name__ == "__main__":
    main()
