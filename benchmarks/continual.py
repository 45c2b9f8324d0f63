"""Continual learning over a sequence of knowledge tasks: every method side by side.

    .venv/bin/python benchmarks/continual.py --mode quick                 # tiny model, 5 tasks, ~1 min
    .venv/bin/python benchmarks/continual.py --mode full --tasks 50       # SmolLM2, 50 tasks (hours)

Tasks come from `make_corpus(tasks=N)`: each adds entities of the next domain and revises facts
of earlier tasks. Methods (same tasks, seeds and base model): naive sequential LoRA (closed
book), LoRA + replay (closed book), RAG without an adapter, peft's OSF (closed book), LoRA +
retrieval retrained from scratch on everything so far, and ours (LoRA + retrieval updated from
the previous version with a fixed replay reservoir, optionally online EWC and distillation).

Prints the summary table (average accuracy, backward transfer, forgetting, retention, revised
facts) and per-task costs; writes JSON, PNG plots (accuracy-matrix heatmaps, retention and
update time per task) into --out, and logs them to MLflow when --tracking-uri is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness and the tiny test model

from benchmarks.continual_harness import METHODS, Settings, load_tasks, quick_setup, run_sequence  # noqa: E402


def full_setup(folder: Path, tasks: int, seed: int) -> tuple[list, Settings]:
    from components.data.synthetic import make_corpus

    make_corpus(
        folder / "tasks", seed=seed, tasks=tasks, entities_per_task=2, revisions_per_task=1, test_share=0.0
    )
    # OSF keeps all but the 8 smallest singular directions frozen: 8 trainable ranks, like LoRA r=8
    osf = {"target_modules": ["q_proj", "v_proj"], "rank_pattern": {"q_proj": 568, "v_proj": 184}}
    settings = Settings(base_model="smollm2-135m-instruct", steps=12, lr=1e-3, bf16=True, k=2, osf=osf)
    return load_tasks(folder / "tasks"), settings


def plots(results: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.2), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        ax.imshow(np.array(result["R"], dtype=float), vmin=0, vmax=1, cmap="viridis")
        ax.set_title(result["method"])
        ax.set_xlabel("task j")
        ax.set_ylabel("after task i")
    fig.tight_layout()
    paths.append(out / "accuracy_matrix.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    for key, label, name in (
        ("retention_curve", "final / just-learned accuracy", "retention.png"),
        ("seconds", "update wall time (s)", "update_time.png"),
    ):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for result in results:
            if key == "seconds":  # tasks a method skipped (scratch between retrainings) are gaps
                seconds = [
                    p["seconds"] if p["peak_rss_mb"] == p["peak_rss_mb"] else np.nan
                    for p in result["per_task"]
                ]
                ax.plot(seconds, marker=".", label=result["method"])
            else:
                r = np.array(result["R"], dtype=float)
                diag = np.diag(r)
                ax.plot(
                    [r[-1, j] / diag[j] if diag[j] > 0 else np.nan for j in range(len(r))],
                    label=result["method"],
                )
        ax.set_xlabel("task")
        ax.set_ylabel(label)
        if key == "seconds":
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / name)
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


COLUMNS = (
    "method",
    "avg accuracy",
    "backward transfer",
    "forgetting",
    "retention",
    "revised: new value",
    "revised: old value",
    "old chunk retrieved",
    "params",
    "adapter bytes",
    "update s (first / last)",
    "peak RSS MB (first / last)",
)


def row(result: dict) -> list[str]:
    nan = float("nan")
    first, last, revised = result["per_task"][0], result["per_task"][-1], result["revised"]
    return [
        result["method"],
        f"{result['average_accuracy']:.3f}",
        f"{result.get('backward_transfer', nan):+.3f}",
        f"{result.get('forgetting', nan):.3f}",
        f"{result.get('retention', nan):.3f}",
        f"{revised.get('answered_new_value', nan):.2f}",
        f"{revised.get('answered_old_value', nan):.2f}",
        f"{revised.get('old_value_retrieved', nan):.2f}",
        f"{last['parameters']:,}",
        f"{last['adapter_bytes']:,}",
        f"{first['seconds']:.2f} / {last['seconds']:.2f}",
        f"{first['peak_rss_mb']:.0f} / {last['peak_rss_mb']:.0f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--mode", choices=("quick", "full"), default="quick")
    parser.add_argument("--tasks", type=int, default=None, help="tasks in the sequence (quick 5, full 50)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--ewc-weight", type=float, default=0.0)
    parser.add_argument("--distill-weight", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--closed-book-steps",
        type=int,
        default=None,
        help="training steps per task for naive/replay/osf (default: the retrieval methods' steps)",
    )
    parser.add_argument(
        "--eval-every", type=int, default=None, help="full R rows every N tasks (quick 1, full 5)"
    )
    parser.add_argument(
        "--scratch-every", type=int, default=None, help="retrain-from-scratch every N tasks (quick 1, full 5)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/continual"))
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="corpora, models and adapters made during the run (default: benchmarks/.cache/<out name>)",
    )
    parser.add_argument("--tracking-uri", default=None, help="log the figures and plots to this MLflow store")
    parser.add_argument(
        "--from-results",
        nargs="+",
        type=Path,
        default=None,
        help="no run: merge these results.json files (runs split over processes) into --out",
    )
    args = parser.parse_args()
    if args.from_results:
        results = [r for path in args.from_results for r in json.loads(path.read_text())]
        report(results, args.out, args.tracking_uri, f"merged-{len(results[0]['per_task'])}")
        return

    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path("benchmarks/.cache") / args.out.name  # never inside the results folder
    if args.mode == "quick":
        tasks, settings = quick_setup(work, args.tasks or 5, args.seed)
    else:
        tasks, settings = full_setup(work, args.tasks or 50, args.seed)
    settings.ewc_weight, settings.distill_weight = args.ewc_weight, args.distill_weight
    full = args.mode == "full"
    settings.closed_book_steps = args.closed_book_steps
    settings.eval_every = args.eval_every or (5 if full else 1)
    settings.scratch_every = args.scratch_every or (5 if full else 1)
    results = []
    for method in args.methods:
        results.append(run_sequence(method, tasks, settings, work / method))
        # written after every method, so a long run that is stopped keeps what it finished
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        print(f"done: {method}: " + " | ".join(row(results[-1])), flush=True)

    print(f"{len(tasks)} tasks, {sum(len(t.new) for t in tasks)} facts taught, mode {args.mode}")
    report(results, args.out, args.tracking_uri, f"{args.mode}-{len(tasks)}")


def report(results: list[dict], out: Path, tracking_uri: str | None, name: str) -> None:
    """Print the table, write results.json and the PNG plots into `out`, log them to MLflow."""
    out.mkdir(parents=True, exist_ok=True)
    print("| " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---:|" * (len(COLUMNS) - 1))
    for result in results:
        print("| " + " | ".join(row(result)) + " |")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    figures = plots(results, out)
    print("plots:", ", ".join(str(p) for p in figures))
    if tracking_uri:
        import mlflow

        from components.registry.mlflow_registry import configure

        configure(tracking_uri)
        with mlflow.start_run(run_name=f"continual-{name}"):
            for r in results:
                mlflow.log_metrics({f"{r['method']}.{k}": v for k, v in r.items() if isinstance(v, float)})
            mlflow.log_artifact(str(out / "results.json"))
            for path in figures:
                mlflow.log_artifact(str(path), "plots")


if __name__ == "__main__":
    main()
