"""Side-by-side evaluation: the same questions through each system, one table."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from components.evaluation.metrics import exact_match, mean, percentile, token_f1


@dataclass
class SystemResult:
    name: str
    predictions: list[str]
    em: float
    f1: float
    latency_ms_mean: float
    latency_ms_p95: float


def run_system(
    name: str,
    answer: Callable[[list[str]], list[str]],
    questions: list[str],
    golds: list[str],
    batch_size: int = 8,
    extra_ms: list[float] | None = None,
) -> SystemResult:
    """Answer every question in batches; latency per question = batch time / batch size (+ extra)."""
    predictions: list[str] = []
    latencies: list[float] = []
    for start in range(0, len(questions), batch_size):
        batch = questions[start : start + batch_size]
        began = time.perf_counter()
        predictions.extend(answer(batch))
        per_question = (time.perf_counter() - began) * 1000 / len(batch)
        latencies.extend([per_question] * len(batch))
    if extra_ms:
        latencies = [a + b for a, b in zip(latencies, extra_ms, strict=True)]
    return SystemResult(
        name,
        predictions,
        em=mean([exact_match(p, g) for p, g in zip(predictions, golds, strict=True)]),
        f1=mean([token_f1(p, g) for p, g in zip(predictions, golds, strict=True)]),
        latency_ms_mean=mean(latencies),
        latency_ms_p95=percentile(latencies, 95),
    )


def markdown_table(
    results: list[SystemResult], retrieval: dict[str, dict[str, float]], k: int, n: int
) -> str:
    """The systems side by side, under a line on how well retrieval found the gold document."""
    parts = [
        f"{name.replace('_', ' ')} recall@{k} {m[f'recall@{k}']:.3f}, MRR {m['mrr']:.3f}"
        for name, m in retrieval.items()
    ]
    lines = [
        f"Evaluated on {n} held-out questions. Gold-document retrieval: " + "; ".join(parts) + ".",
        "",
        "| system | EM | F1 | latency ms (mean) | latency ms (p95) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.em:.3f} | {r.f1:.3f} | {r.latency_ms_mean:.0f} | {r.latency_ms_p95:.0f} |"
        )
    return "\n".join(lines) + "\n"
