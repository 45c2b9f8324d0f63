"""Continual-learning metrics as the literature defines them, with their intervals and tests.

`R[i][j]` is the accuracy on task j's questions after learning task i (NaN where not measured:
above the diagonal, or rows skipped to save time). From it (Lopez-Paz & Ranzato 2017; Chaudhry
et al. 2018):

- average accuracy: the mean of the last row;
- backward transfer: the mean over earlier tasks of final minus just-learned accuracy;
- forgetting: the mean over earlier tasks of the best accuracy ever measured before the last
  task minus the final one;
- retention: the mean over earlier tasks of final / just-learned, each clipped at 1 (a task
  learned badly and answered better later cannot count for more than all it had).

Intervals: over seeds (Student's t on the per-seed figures) and over facts within a seed
(a percentile bootstrap that resamples each task's facts). Two methods are compared on the
same facts by an exact McNemar test on the facts one answers right and the other wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def accuracy_summary(r: np.ndarray) -> dict[str, float]:
    """Average accuracy, backward transfer, forgetting and clipped retention from `R[i][j]`
    (`retention_unclipped` beside, for comparison with figures that did not clip)."""
    r = np.asarray(r, dtype=float)
    last, t = r[-1], len(r)
    diag = np.diag(r)
    summary = {"average_accuracy": float(np.nanmean(last))}
    earlier = [j for j in range(t - 1) if not np.isnan(diag[j]) and not np.isnan(last[j])]
    if earlier:
        summary["backward_transfer"] = float(np.mean([last[j] - diag[j] for j in earlier]))
        summary["forgetting"] = float(np.mean([np.nanmax(r[j : t - 1, j]) - last[j] for j in earlier]))
        ratios = [last[j] / diag[j] for j in earlier if diag[j] > 0]
        summary["retention"] = float(np.mean(np.minimum(ratios, 1.0))) if ratios else float("nan")
        summary["retention_unclipped"] = float(np.mean(ratios)) if ratios else float("nan")
    return summary


def seed_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of a Student-t interval over per-seed figures; half-width NaN for one."""
    from scipy import stats

    data = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(data) == 0:
        return float("nan"), float("nan")
    if len(data) == 1:
        return float(data[0]), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(data) - 1) * data.std(ddof=1) / math.sqrt(len(data))
    return float(data.mean()), float(half)


def bootstrap_average_accuracy(
    correct: Mapping[str, float],
    task_of: Mapping[str, int],
    samples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """A percentile interval of average accuracy (the mean over tasks of each task's share of
    facts answered right), resampling the facts of each task with replacement."""
    by_task: dict[int, list[float]] = {}
    for qid, value in correct.items():
        by_task.setdefault(task_of[qid], []).append(float(value))
    groups = [np.asarray(v) for _, v in sorted(by_task.items())]
    rng = np.random.default_rng(seed)
    draws = np.empty(samples)
    for s in range(samples):
        draws[s] = np.mean([g[rng.integers(0, len(g), len(g))].mean() for g in groups])
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def mcnemar_exact(ours: Sequence[float], theirs: Sequence[float]) -> dict[str, float]:
    """The exact two-sided McNemar test on paired right/wrong outcomes (the same facts, in the
    same order): b = ours right and theirs wrong, c = the reverse, p from Binomial(b + c, 1/2)."""
    from scipy import stats

    a, b_ = np.asarray(ours, dtype=bool), np.asarray(theirs, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError(f"paired outcomes differ in length: {a.shape} and {b_.shape}")
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return {"ours_only": b, "theirs_only": c, "p_value": p, "difference": float(a.mean() - b_.mean())}
