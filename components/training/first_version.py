"""The first corpus version's adapter (adapter-train), and one per document domain
(`adapter-train.per_domain`): trained on that domain's questions, reading its passages only."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from components.adapters.kv_index import KVFolder
from components.core.artifacts import versions_in
from components.core.params import PipelineParams
from components.core.paths import Paths
from components.data.domains import (
    choose_domains,
    domain_filter,
    drop_other_domains,
    questions_of,
    read_document_domains,
    write_domains,
)
from components.training.distributed import in_launched_process, launch
from components.training.examples import examples_of_version, first_version_objective
from components.training.recipe import already_trained, train_adapter, training_fingerprint


def train_first_version(
    params: PipelineParams, paths: Paths, qa: pd.DataFrame, chunks: pd.DataFrame, domain: str | None = None
) -> dict[str, Any] | None:
    """The adapter of the first corpus version in `paths.base_adapter` (skipped when the same
    data, params and model made the one there); a `domain` adapter sees that domain's passages."""
    p, model, retrieval = params.adapter_train, params.model, params.retrieval
    first = versions_in(chunks)[0]
    wanted = "qa" if domain else p.objective  # a domain has an adapter for having questions
    objective, items, lm_ids = first_version_objective(wanted, qa, chunks, first)
    where = domain_filter(domain) if domain else None
    examples = examples_of_version(params, paths, chunks, first, items, lm_ids, p.ensure_gold, where)
    fingerprint = training_fingerprint(p, model, retrieval, examples)
    if (done := already_trained(paths.base_adapter, fingerprint)) is not None:
        return done  # same data, params and model as the adapter already there
    if p.processes > 1 and not in_launched_process() and domain is None:
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
        domain=domain,
    )


def train_domains(params: PipelineParams, paths: Paths, qa: pd.DataFrame, chunks: pd.DataFrame) -> dict:
    """One adapter per domain with enough train questions (`adapter-train.per_domain`), in
    `paths.domain_adapters/<domain>`; the list of domains beside them (none when it is off)."""
    p = params.adapter_train
    chosen, skipped, trained = [], {}, {}
    if p.per_domain:
        domains = read_document_domains(paths.documents)
        first = versions_in(chunks)[0]
        chosen, skipped = choose_domains(qa, domains, first, p.min_domain_questions)
        for domain in chosen:
            part = questions_of(qa, domains, domain)
            trained[domain] = train_first_version(params, paths.for_domain(domain), part, chunks, domain)
    drop_other_domains(paths.domain_adapters, chosen)
    write_domains(paths.domain_adapters, chosen, skipped)
    return {"trained": trained, "skipped": skipped}
