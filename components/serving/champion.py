"""The promotion gate over evaluate's predictions, with the champion scored as it is served (its
adapter with its own linked index) on the candidate's test questions (rules: components/registry/gate.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from components.core.params import RegisterParams
from components.evaluation.compare import system_scores
from components.evaluation.harness import run_system
from components.registry import mlflow_registry as reg
from components.registry.gate import ChampionScores, GateDecision, decide
from components.serving.answerer import Answerer


def score_champion(
    client: Any,
    names: reg.ModelNames,
    rows: list[dict],
    metric: str,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
) -> ChampionScores | None:
    """The champion's per-question `metric` on evaluate's prediction `rows`; None without one."""
    champion = reg.version_by_alias(client, names.adapter, "champion")
    if champion is None:
        return None
    name = f"champion v{champion.version}"
    try:
        with tempfile.TemporaryDirectory(prefix="retro-champion-") as tmp:
            pair = reg.download_adapter_version(client, champion, Path(tmp), names)
            answerer = Answerer(pair.adapter_dir, pair.index_dir, pair.adapter_version, pair.index_version)

            def answer(batch: list[str]) -> list[str]:
                return answerer.answer_batch(batch, max_new_tokens=max_new_tokens)

            questions, golds = [r["question"] for r in rows], [r["gold"] for r in rows]
            result = run_system(name, answer, questions, golds, batch_size, seed=seed)
    except (LookupError, OSError, ValueError, RuntimeError) as exc:
        return ChampionScores(str(champion.version), problem=f"{name} could not be served ({exc})")
    answered = [{**r, "champion": p} for r, p in zip(rows, result.predictions, strict=True)]
    return ChampionScores(str(champion.version), system_scores(answered, "champion", metric))


def gate_candidate(
    client: Any,
    names: reg.ModelNames,
    rows: list[dict],
    p: RegisterParams,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
) -> GateDecision:
    """The gate's decision on evaluate's prediction `rows`; the champion is scored only for a
    candidate that beats plain RAG."""
    metric = p.gate_metric
    if not rows:
        return decide([], None, None, metric)
    candidate, rag = system_scores(rows, "adapter", metric), system_scores(rows, "rag", metric)
    against_rag = decide(candidate, rag, None, metric, p.min_gain, p.max_regression, seed)
    if not against_rag.promote:
        return against_rag
    champion = score_champion(client, names, rows, metric, max_new_tokens, batch_size, seed)
    return decide(candidate, rag, champion, metric, p.min_gain, p.max_regression, seed)
