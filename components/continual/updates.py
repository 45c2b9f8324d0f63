"""continual-update's work: the adapter chain brought up to the newest corpus version, and with
per-domain adapters each domain's own chain, on its own questions and passages."""

from __future__ import annotations

from functools import partial
from typing import Any

import pandas as pd

from components.adapters.kv_index import KVFolder
from components.continual.chain import AdapterChain, update_in_place
from components.core.artifacts import versions_in
from components.core.params import PipelineParams
from components.core.paths import Paths
from components.data.domains import (
    domain_filter,
    drop_other_domains,
    questions_of,
    read_document_domains,
    read_domains,
)
from components.training.examples import Example, examples_of_version


def update_chain(
    params: PipelineParams,
    paths: Paths,
    qa: pd.DataFrame,
    chunks: pd.DataFrame,
    domain: str | None = None,
) -> dict[str, Any]:
    """Bring `paths.current_adapter` up to the newest corpus version. A `domain` adapter reads
    that domain's passages and learns from its questions only: a version without new questions
    of the domain leaves it as it was."""
    p, train_p, model = params.continual_update, params.adapter_train, params.model
    versions = versions_in(chunks)
    chain = AdapterChain.open(
        paths.current_adapter, paths.base_adapter, versions, qa, p.replay_size, model.seed
    )
    where = domain_filter(domain) if domain else None

    def examples_for(version: str, items: list[dict], lm_ids: set[str] | None) -> list[Example]:
        return examples_of_version(params, paths, chunks, version, items, lm_ids, where=where)

    kv_folder = KVFolder(paths.chunk_kv, params.index.chunk_kv_budget_gb)
    update = partial(update_in_place, chain.out, model, train_p, p, kv_folder=kv_folder)
    pending = chain.pending(versions)
    documents_objective = train_p.objective != "qa" and domain is None
    for version in pending:
        chain.learn(version, qa, chunks, examples_for, update, lm_fallback=documents_objective)
    chain.save()
    return chain.summary(len(pending))


def update_domains(params: PipelineParams, paths: Paths, qa: pd.DataFrame, chunks: pd.DataFrame) -> dict:
    """Each domain adapter (`adapter-train.per_domain`) brought up to the newest version in
    `paths.domain_current/<domain>`; folders of domains no longer trained are removed."""
    summary: dict[str, Any] = {}
    domains = read_domains(paths.domain_adapters)
    paths.domain_current.mkdir(parents=True, exist_ok=True)
    drop_other_domains(paths.domain_current, domains)  # domains adapter-train no longer trains
    if domains:
        of = read_document_domains(paths.documents)
        for d in domains:
            part = questions_of(qa, of, d)
            summary[d] = update_chain(params, paths.for_domain(d), part, chunks, d)
    return summary
