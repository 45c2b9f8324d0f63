"""The continual benchmark's goals, checked on its results: one markdown row per goal with the
figures that decide it, so a run reports what it met and what it missed.

Goals (the charter's, as "Continual learning results that hold up" states them): ours beats the
frozen adapter and LoRA + retrieval without replay significantly; average accuracy within 2
points of retraining from scratch; clipped retention above 0.90; update time at the last task
under 1.1x the first update of the same step budget; zero parameter growth; peak RSS at the last
task at most 1.1x the first; general-capability accuracy within 2 points of the base model (the
RAG row, which has no adapter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from components.continual.metrics import mcnemar_exact


def paired_test(runs: Sequence[dict], ours: Sequence[dict]) -> dict[str, float] | None:
    """Exact McNemar of `runs` against ours over the facts both answered, pooled over the seeds
    they share: `difference` is ours − theirs. None when they share no seed."""
    by_seed = {r["seed"]: r for r in ours}
    mine, theirs = [], []
    for run in runs:
        reference = by_seed.get(run["seed"])
        if reference is None or reference is run:
            continue
        shared = sorted(set(run["final"]) & set(reference["final"]))
        mine += [reference["final"][q] for q in shared]
        theirs += [run["final"][q] for q in shared]
    return mcnemar_exact(mine, theirs) if mine else None


def _mean(runs: Sequence[dict], key: str) -> float:
    values = [r.get(key, math.nan) for r in runs]
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else math.nan


def ran(cost: dict) -> bool:
    """Whether a task's update ran: tasks scratch skipped between retrainings have a NaN peak RSS."""
    return cost["peak_rss_mb"] == cost["peak_rss_mb"]


def _ran(per_task: list[dict]) -> list[dict]:
    return [p for p in per_task if ran(p)]


def regular_updates(run: dict) -> list[dict]:
    """The updates a run made at its last task's step budget: task 1's longer first-task budget
    (`first_steps`) is not one of them, nor are the tasks scratch skipped."""
    done = _ran(run["per_task"])
    if done and "steps" not in done[-1]:  # written before steps were recorded: task 1 had first_steps
        settings = run.get("settings", {})
        longer_first = settings.get("first_steps") not in (None, settings.get("steps"))
        return done[1:] if longer_first else done
    return [p for p in done if p.get("steps") == done[-1].get("steps")] if done else []


def _update_ratio(run: dict) -> tuple[float, float]:
    """(last / first update at the last task's step budget, mean of the last 5 / mean of the first 5
    such updates): the defined ratio and a steadier one beside it."""
    regular = [p["seconds"] for p in regular_updates(run)]
    if len(regular) < 2:
        return math.nan, math.nan
    return regular[-1] / regular[0], float(np.mean(regular[-5:]) / np.mean(regular[:5]))


def _beats(name: str, runs: list[dict], ours: list[dict]) -> list[str]:
    test = paired_test(runs, ours) if runs else None
    if test is None:
        return [f"ours beats {name}, significantly", "not run", "not measured"]
    met = test["difference"] > 0 and test["p_value"] < 0.05
    return [
        f"ours beats {name}, significantly",
        f"{_mean(ours, 'average_accuracy'):.3f} vs {_mean(runs, 'average_accuracy'):.3f}, "
        f"{test['ours_only']} facts only ours answered, {test['theirs_only']} only it, "
        f"p = {test['p_value']:.3g}",
        "yes" if met else "no",
    ]


def _yes(met: bool, measured: bool = True) -> str:
    return ("yes" if met else "no") if measured else "not measured"


def _scratch_row(ours: list[dict], scratch: list[dict]) -> list[str]:
    gap = _mean(ours, "average_accuracy") - _mean(scratch, "average_accuracy")
    goal = "average accuracy within 2 points of retraining from scratch"
    measured = f"ours − scratch = {gap:+.3f}" if gap == gap else "scratch did not run"
    return [goal, measured, _yes(gap >= -0.02, gap == gap)]


def _update_row(ours: list[dict]) -> list[str]:
    ratios = [_update_ratio(r) for r in ours]
    single, steady = float(np.mean([a for a, _ in ratios])), float(np.mean([b for _, b in ratios]))
    goal = "update time, last task / first at the same budget < 1.1"
    return [goal, f"{single:.2f} (last 5 / first 5: {steady:.2f})", _yes(single < 1.1, single == single)]


def _memory_rows(ours: list[dict]) -> list[list[str]]:
    params = sorted({p["parameters"] for r in ours for p in r["per_task"]})
    peaks = [[p["peak_rss_mb"] for p in _ran(r["per_task"])] for r in ours]
    rss = float(np.mean([run[-1] / run[0] for run in peaks]))
    return [
        ["zero parameter growth", f"{params} trainable parameters", _yes(len(params) == 1)],
        ["peak RSS last task / task 1 <= 1.10", f"{rss:.2f}", _yes(rss <= 1.10)],
    ]


def _general_row(ours: list[dict], base: list[dict]) -> list[str]:
    mine, theirs = _mean(ours, "general_accuracy"), _mean(base, "general_accuracy")
    goal = "general-capability accuracy within 2 points of the base model"
    measured = f"ours {mine:.3f}, base model (RAG row) " + (
        f"{theirs:.3f}" if theirs == theirs else "did not run"
    )
    return [goal, measured, _yes(mine >= theirs - 0.02, theirs == theirs)]


def goal_rows(results: Sequence[dict]) -> list[str]:
    """The goals table (markdown lines) for one sequence's results; figures are ours' mean over its
    seeds. A goal whose rows did not run says so."""
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["method"], []).append(r)
    ours = by.get("ours", [])
    lines = ["| goal | measured | met? |", "|---|---|---|"]
    if not ours:
        return [*lines, "| every goal | ours did not run | not measured |"]
    retention = _mean(ours, "retention")
    rows = [
        _beats("the frozen adapter", by.get("frozen", []), ours),
        _beats("LoRA + retrieval without replay", by.get("lora_rag", []), ours),
        _scratch_row(ours, by.get("scratch", [])),
        ["retention (clipped) > 0.90", f"{retention:.3f}", _yes(retention > 0.9, retention == retention)],
        _update_row(ours),
        *_memory_rows(ours),
        _general_row(ours, by.get("rag", [])),
    ]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]
