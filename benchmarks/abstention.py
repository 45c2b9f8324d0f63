"""Answers that admit what they do not know: abstention signals on a corpus with documents removed.

    .venv/bin/python -m benchmarks.abstention --project <a covid-qa project> \\
        --qa ../shared/corpora/covid-qa/qa.jsonl --questions 240

A project's registered-to-be adapter and index (`retro pipeline` on covid-qa) answer human
questions whose gold document is known. Documents are removed from the served index (the
service's `forget`) until about a third of the questions have lost theirs: those are the
unanswerable ones. Every question is answered as the service answers it, and two signals are
recorded for each:

- `support`: the share of the answer's content tokens found in the passages it was given
  (components/evaluation/metrics.py `support_share`; `serve.abstain.mode: support`);
- `similarity`: the cosine between the question and the best retrieved passage, with the index's
  embedder (a retrieval-score signal).

The questions are split in two halves by a fixed seed. On the validation half each signal's
threshold is fitted (abstain below it; the threshold with the best balanced accuracy between
abstaining on unanswerable questions and answering answerable ones); on the test half it is
applied. Reported per signal, on the test half, with 95% bootstrap intervals: the share of the
unanswerable abstained on, the share of the answerable abstained on, and EM/F1 of the answers
given. Writes benchmarks/results/abstention_<label>.json and prints markdown.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def removed_documents(rows: list[dict], share: float, seed: int) -> set[str]:
    """Documents, drawn at random, until their questions are `share` of all."""
    docs = sorted({r["doc_id"] for r in rows})
    random.Random(seed).shuffle(docs)
    removed: set[str] = set()
    for doc in docs:
        if sum(r["doc_id"] in removed for r in rows) >= share * len(rows):
            break
        removed.add(doc)
    return removed


def answered(project: Path, rows: list[dict], removed: set[str], k: int | None) -> list[dict]:
    """Each question answered as the service answers it, with both signals."""
    from tqdm.auto import tqdm

    from components.core.paths import Paths
    from components.evaluation.metrics import exact_match, support_share, token_f1
    from components.serving.answerer import Answerer

    layout = Paths(project)
    answerer = Answerer(layout.current_adapter, layout.index)
    answerer.forget(frozenset(removed))
    k = k or answerer.k
    out = []
    for row in tqdm(rows, desc="abstention: answering", unit="question"):
        hits = answerer.retrieve([row["question"]], k)[0]
        prompt, texts = answerer.prompt(row["question"], hits)
        answer = answerer.generate([(prompt, texts)])[0]
        vectors = answerer.embed([row["question"], *texts])
        similarity = float(np.max(vectors[1:] @ vectors[0])) if texts else 0.0
        share = support_share(answer, texts)
        out.append(
            {
                **row,
                "answerable": row["doc_id"] not in removed,
                "answer": answer,
                "support": 0.0 if share is None else share,
                "similarity": similarity,
                "em": exact_match(answer, row["answer"]),
                "f1": token_f1(answer, row["answer"]),
            }
        )
    return out


def fitted_threshold(rows: list[dict], signal: str) -> float:
    """The threshold (abstain below it) with the best balanced accuracy on `rows`."""
    values = sorted({r[signal] for r in rows})
    candidates = [values[0] - 1e-9] + [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)]
    candidates.append(values[-1] + 1e-9)

    def balanced(t: float) -> float:
        return np.mean(
            [
                np.mean([r[signal] < t for r in rows if not r["answerable"]] or [0.0]),
                np.mean([r[signal] >= t for r in rows if r["answerable"]] or [0.0]),
            ]
        )

    return max(candidates, key=balanced)


def bootstrap(values: list[float], seed: int, rounds: int = 2000) -> list[float]:
    if not values:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    draws = rng.choice(np.asarray(values, dtype=float), size=(rounds, len(values)))
    return [float(np.percentile(draws.mean(1), 2.5)), float(np.percentile(draws.mean(1), 97.5))]


def applied(rows: list[dict], signal: str | None, threshold: float, seed: int) -> dict[str, Any]:
    """Abstention figures on `rows` with `signal` below `threshold` (None: never abstain)."""
    abstain = [signal is not None and r[signal] < threshold for r in rows]
    unanswerable = [a for a, r in zip(abstain, rows, strict=True) if not r["answerable"]]
    answerable = [a for a, r in zip(abstain, rows, strict=True) if r["answerable"]]
    given = [r for a, r in zip(abstain, rows, strict=True) if not a]
    em = [r["em"] if r["answerable"] else 0.0 for r in given]
    f1 = [r["f1"] if r["answerable"] else 0.0 for r in given]
    return {
        "threshold": None if signal is None else threshold,
        "abstained_unanswerable": float(np.mean(unanswerable)) if unanswerable else None,
        "abstained_unanswerable_ci": bootstrap([float(a) for a in unanswerable], seed),
        "abstained_answerable": float(np.mean(answerable)) if answerable else None,
        "abstained_answerable_ci": bootstrap([float(a) for a in answerable], seed),
        "answers_given": len(given),
        "em_given": float(np.mean(em)) if em else None,
        "f1_given": float(np.mean(f1)) if f1 else None,
        "f1_given_ci": bootstrap(f1, seed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--project", type=Path, required=True, help="a pipeline's project folder")
    parser.add_argument("--qa", type=Path, required=True, help="human questions (jsonl with doc_id)")
    parser.add_argument("--questions", type=int, default=240)
    parser.add_argument("--removed-share", type=float, default=1 / 3)
    parser.add_argument("--k", type=int, default=0, help="passages (0: the adapter's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", default="covid")
    args = parser.parse_args()

    rows = [json.loads(line) for line in args.qa.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("doc_id") and r.get("answer")]
    random.Random(args.seed).shuffle(rows)
    rows = rows[: args.questions]
    removed = removed_documents(rows, args.removed_share, args.seed)
    results = answered(args.project, rows, removed, args.k or None)
    half = len(results) // 2
    validation, test = results[:half], results[half:]
    report: dict[str, Any] = {
        "questions": len(results),
        "removed_documents": sorted(removed),
        "unanswerable": sum(not r["answerable"] for r in results),
        "test_questions": len(test),
        "rows": {"never abstain": applied(test, None, 0.0, args.seed)},
    }
    for signal in ("support", "similarity"):
        threshold = fitted_threshold(validation, signal)
        report["rows"][signal] = applied(test, signal, threshold, args.seed)
    report["answers"] = results
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"abstention_{args.label}.json").write_text(json.dumps(report, indent=2))
    print_table(report)


def print_table(report: dict) -> None:
    print(
        f"\n{report['questions']} questions, {report['unanswerable']} unanswerable "
        f"({len(report['removed_documents'])} documents removed); thresholds fitted on "
        f"{report['questions'] - report['test_questions']}, figures on {report['test_questions']}\n"
    )
    print(
        "| abstain when | threshold | unanswerable abstained on | answerable abstained on "
        "| answers given | EM of answers given | F1 of answers given |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")

    def ci(low_high: list[float]) -> str:
        return f"[{low_high[0]:.3f}, {low_high[1]:.3f}]"

    for name, row in report["rows"].items():
        threshold = "-" if row["threshold"] is None else f"{row['threshold']:.3f}"
        unanswerable = f"{row['abstained_unanswerable']:.3f} {ci(row['abstained_unanswerable_ci'])}"
        answerable = f"{row['abstained_answerable']:.3f} {ci(row['abstained_answerable_ci'])}"
        f1 = f"{row['f1_given']:.3f} {ci(row['f1_given_ci'])}"
        given = f"{row['answers_given']} | {row['em_given']:.3f} | {f1}"
        print(f"| {name} | {threshold} | {unanswerable} | {answerable} | {given} |")


if __name__ == "__main__":
    main()
