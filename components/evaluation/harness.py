"""Side-by-side evaluation: the same questions through each system, one table with intervals."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from components.evaluation.intervals import Estimate, bootstrap, paired_difference
from components.evaluation.metrics import answer_support, exact_match, mean, percentile, token_f1


@dataclass
class SystemResult:
    """One system's answers with the per-question scores behind its figures."""

    name: str
    predictions: list[str]
    em_scores: list[float]
    f1_scores: list[float]
    latencies: list[float]
    support_scores: list[float] | None = None  # answers with content tokens; None: given no passages
    seed: int = 0
    intervals: dict[str, Estimate] = field(init=False)

    def __post_init__(self) -> None:
        self.intervals = {
            "em": bootstrap(self.em_scores, self.seed),
            "f1": bootstrap(self.f1_scores, self.seed),
        }
        if self.support_scores is not None:
            self.intervals["support"] = bootstrap(self.support_scores, self.seed)

    @property
    def em(self) -> float:
        """Mean exact match."""
        return mean(self.em_scores)

    @property
    def f1(self) -> float:
        """Mean token F1."""
        return mean(self.f1_scores)

    @property
    def latency_ms_mean(self) -> float:
        """Mean latency per question, in milliseconds."""
        return mean(self.latencies)

    @property
    def latency_ms_p95(self) -> float:
        """95th-percentile latency per question, in milliseconds."""
        return percentile(self.latencies, 95)

    def figures(self) -> dict[str, float | int | None]:
        """evaluate.json's entry of this system: each figure with its 95% interval (`_lo`, `_hi`)."""
        out: dict[str, float | int | None] = {}
        for name, estimate in self.intervals.items():
            out |= estimate.as_dict(name)
        if self.support_scores is not None:
            out["support_answers"] = len(self.support_scores)
        else:
            out["support"] = None  # it was given no passages
        return out | {"latency_ms_mean": self.latency_ms_mean, "latency_ms_p95": self.latency_ms_p95}


def run_system(
    name: str,
    answer: Callable[[list[str]], list[str]],
    questions: list[str],
    golds: list[str],
    batch_size: int = 8,
    extra_ms: list[float] | None = None,
    passages: list[list[str]] | None = None,
    seed: int = 0,
) -> SystemResult:
    """Answer every question in batches (with a progress bar); latency per question = batch
    time / batch size (+ extra). With `passages` (what each question was given), answer support
    is scored too."""
    from tqdm.auto import tqdm

    predictions: list[str] = []
    latencies: list[float] = []
    with tqdm(total=len(questions), desc=f"evaluate: {name}", unit="question", leave=False) as bar:
        for start in range(0, len(questions), batch_size):
            batch = questions[start : start + batch_size]
            began = time.perf_counter()
            predictions.extend(answer(batch))
            per_question = (time.perf_counter() - began) * 1000 / len(batch)
            latencies.extend([per_question] * len(batch))
            bar.update(len(batch))
    if extra_ms:
        latencies = [a + b for a, b in zip(latencies, extra_ms, strict=True)]
    return scored(name, predictions, golds, latencies, passages, seed)


def scored(
    name: str,
    predictions: list[str],
    golds: list[str],
    latencies: list[float],
    passages: list[list[str]] | None = None,
    seed: int = 0,
) -> SystemResult:
    """A system's predictions scored against the golds: EM, F1 and, with the passages each
    question was given, answer support."""
    support = None
    if passages is not None:
        checked = [answer_support(p, given) for p, given in zip(predictions, passages, strict=True)]
        support = [s for s in checked if s is not None]
    return SystemResult(
        name,
        predictions,
        em_scores=[exact_match(p, g) for p, g in zip(predictions, golds, strict=True)],
        f1_scores=[token_f1(p, g) for p, g in zip(predictions, golds, strict=True)],
        latencies=latencies,
        support_scores=support,
        seed=seed,
    )


def paired_gain(ours: SystemResult, theirs: SystemResult, seed: int = 0) -> dict[str, Estimate]:
    """`ours - theirs` per question, EM and F1, each with its paired bootstrap interval."""
    return {
        "em": paired_difference(ours.em_scores, theirs.em_scores, seed),
        "f1": paired_difference(ours.f1_scores, theirs.f1_scores, seed),
    }


def _interval(estimate: Estimate | None) -> str:
    return "n/a" if estimate is None else str(estimate)


def markdown_table(
    results: list[SystemResult],
    retrieval: dict[str, dict[str, float]],
    k: int,
    n: int,
    gains: dict[str, Estimate] | None = None,
) -> str:
    """The systems side by side (figures with 95% bootstrap intervals over questions), under a
    line on how well retrieval found the gold chunk and the gold document."""

    def chunk_level(m: dict) -> str:
        if not m["chunk_questions"]:
            return f"chunk recall@{k} n/a (no answer located in a chunk)"
        return (
            f"chunk recall@{k} {m[f'chunk_recall@{k}']:.3f} (MRR {m['chunk_mrr']:.3f}, "
            f"{m['chunk_questions']} questions with a located answer)"
        )

    parts = [
        f"{name.replace('_', ' ')}: {chunk_level(m)}, "
        f"document recall@{k} {m[f'doc_recall@{k}']:.3f} (MRR {m['doc_mrr']:.3f})"
        for name, m in retrieval.items()
    ]
    lines = [
        f"Evaluated on {n} held-out questions; [95% bootstrap interval over questions]. "
        "Retrieval, " + "; ".join(parts) + ".",
        "",
        "| system | EM | F1 | answer support | latency ms (mean) | latency ms (p95) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        support = _interval(r.intervals.get("support"))
        lines.append(
            f"| {r.name} | {r.intervals['em']} | {r.intervals['f1']} | {support} "
            f"| {r.latency_ms_mean:.0f} | {r.latency_ms_p95:.0f} |"
        )
    if gains:
        lines += [
            "",
            f"Adapter minus RAG, paired over the same questions: EM {gains['em']}, F1 {gains['f1']}.",
        ]
    lines += [
        "",
        "Answer support: share of answers whose content tokens all appear in the passages the system "
        "was given (n/a: given none).",
    ]
    return "\n".join(lines) + "\n"
