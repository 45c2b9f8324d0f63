"""The evaluation's plots: the systems with their intervals, recall@k curves, answer lengths.

Written by evaluate beside its table (`paths.evaluation_plots`), logged to the MLflow run by
register and shown on the run's `retro-evaluation` Prefect artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.evaluation.compare import SYSTEM_NAMES as SYSTEMS

COLOURS = {"base": "#9e9e9e", "rag": "#5c6bc0", "adapter": "#ef6c00", "gold": "#2e7d32"}
SYSTEMS_PNG, RECALL_PNG, LENGTHS_PNG = "systems.png", "recall_at_k.png", "answer_lengths.png"
PLOT_FILES = (SYSTEMS_PNG, RECALL_PNG, LENGTHS_PNG)  # the order a person reads them in


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_systems(metrics: dict[str, Any], path: Path) -> Path:
    """Bar chart of EM and F1 of each system, with their 95% intervals as error bars."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 3.6))
    shown = [key for key in SYSTEMS if isinstance(metrics.get(key), dict)]
    width = 0.8 / max(len(shown), 1)
    for i, key in enumerate(shown):
        figures = metrics[key]
        values = [_number(figures.get(m), 0.0) for m in ("em", "f1")]
        low = [v - _number(figures.get(f"{m}_lo"), v) for v, m in zip(values, ("em", "f1"), strict=True)]
        high = [_number(figures.get(f"{m}_hi"), v) - v for v, m in zip(values, ("em", "f1"), strict=True)]
        positions = [x + (i - (len(shown) - 1) / 2) * width for x in range(2)]
        axes.bar(
            positions, values, width, yerr=[low, high], capsize=4, label=SYSTEMS[key], color=COLOURS[key]
        )
    axes.set_xticks(range(2), ["exact match", "token F1"])
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("score (95% bootstrap interval)")
    axes.set_title(
        f"{metrics.get('questions', 0)} held-out questions, corpus {metrics.get('corpus_version', '?')}"
    )
    axes.legend(loc="upper left", fontsize=8)
    return _save(figure, path)


def plot_recall_curve(curve: dict[str, Any] | None, path: Path) -> Path | None:
    """Recall@k for k = 1..K at the chunk and the document level; None without a curve."""
    if not curve or not curve.get("k"):
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 3.6))
    for level, style in (("chunk", "o-"), ("doc", "s--")):
        values = curve.get(level)
        if values and all(v is not None for v in values):
            questions = curve.get(f"{level}_questions")
            axes.plot(curve["k"], values, style, label=f"{level} ({questions} questions)")
    if curve.get("used_k"):
        axes.axvline(curve["used_k"], color="#999", linestyle=":", label=f"retrieval.k = {curve['used_k']}")
    axes.set_xlabel("k (passages retrieved)")
    axes.set_ylabel("recall@k")
    axes.set_ylim(0, 1.05)
    axes.set_xticks(curve["k"])
    axes.legend(loc="lower right", fontsize=8)
    axes.set_title("Is the answer among the first k passages?")
    return _save(figure, path)


def plot_answer_lengths(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Histogram of answer lengths in words: each system's answers and the gold answers."""
    if not rows:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.5, 3.6))
    series = {key: [len(str(r.get(key) or "").split()) for r in rows] for key in (*SYSTEMS, "gold")}
    longest = max(max(v) for v in series.values())
    bins = range(0, longest + 2)
    for key, lengths in series.items():
        label = "gold answers" if key == "gold" else SYSTEMS[key]
        axes.hist(lengths, bins=bins, histtype="step", linewidth=1.6, label=label, color=COLOURS[key])
    axes.set_xlabel("answer length (words)")
    axes.set_ylabel("questions")
    axes.legend(fontsize=8)
    axes.set_title("Answer lengths: does each system answer in the gold answers' form?")
    return _save(figure, path)


def write_evaluation_plots(metrics: dict[str, Any], rows: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Write the evaluation's plots into `folder` (emptied first); returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    if not metrics.get("questions"):
        return []
    written = [
        plot_systems(metrics, folder / SYSTEMS_PNG),
        plot_recall_curve(metrics.get("recall_curve"), folder / RECALL_PNG),
        plot_answer_lengths(rows, folder / LENGTHS_PNG),
    ]
    return [p for p in written if p is not None]


def _number(value: Any, default: float) -> float:
    return default if value is None else float(value)


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    _pyplot().close(figure)
    return path
