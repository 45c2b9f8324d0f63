"""Final accuracy by gold label on the PubMedQA sequence: does a method tell yes from no, or say
the majority label to everything?

A yes / no / maybe sequence can be scored at its majority share by a model that always answers
"yes". This prints, for each run in the results files, the share of held-out questions answered
correctly among those whose gold label is yes, no and maybe, in all, and balanced (the mean over
the labels), beside the always-yes reference.

    .venv/bin/python benchmarks/continual_labels.py benchmarks/results/continual-pubmedqa50/*/results.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.continual import PUBMEDQA  # noqa: E402
from benchmarks.continual_harness import pubmedqa_tasks  # noqa: E402

LABELS = ("yes", "no", "maybe")


def held_out_labels(tasks: int, corpus_seed: int = 1) -> dict[str, str]:
    """The gold label of every held-out question of the PubMedQA sequence (as the benchmark built it)."""
    return {
        it["id"]: it["answer"]
        for task in pubmedqa_tasks(PUBMEDQA, tasks=tasks, seed=corpus_seed)
        for it in task.new
        if it["id"] in task.held_out
    }


def label_rows(results: list[dict], gold: dict[str, str]) -> list[str]:
    """Markdown rows: each run's final accuracy on the held-out questions of each gold label, in
    all, and balanced (the mean over labels: 1/3 for any answer that ignores the question)."""
    counts = Counter(gold.values())
    header = " | ".join(f"{label} (n={counts[label]})" for label in LABELS)
    rows = [f"| method | seed | {header} | all | balanced |", "|---|---:|" + "---:|" * (len(LABELS) + 2)]
    always_yes = {label: float(label == "yes") for label in LABELS}
    rows.append(_row('always "yes"', "-", always_yes, counts["yes"] / len(gold)))
    for r in results:
        right = Counter(gold[q] for q, v in r["final"].items() if q in gold and v == 1.0)
        shares = {label: right[label] / counts[label] for label in LABELS if counts[label]}
        rows.append(_row(r["method"], r["seed"], shares, sum(right.values()) / len(gold)))
    return rows


def _row(method: str, seed: object, shares: dict[str, float], total: float) -> str:
    cells = " | ".join(f"{shares[label]:.3f}" if label in shares else "-" for label in LABELS)
    balanced = sum(shares.values()) / len(shares)
    return f"| {method} | {seed} | {cells} | {total:.3f} | {balanced:.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json files of PubMedQA runs")
    parser.add_argument("--corpus-seed", type=int, default=1)
    args = parser.parse_args()
    results = [r for path in args.results for r in json.loads(path.read_text())]
    gold = held_out_labels(len(results[0]["per_task"]), args.corpus_seed)
    print("\n".join(label_rows(results, gold)))


if __name__ == "__main__":
    main()
