"""Continual learning over a sequence of knowledge tasks: every method side by side.

    .venv/bin/python benchmarks/continual.py --mode quick                 # tiny model, 5 tasks, ~1 min
    .venv/bin/python benchmarks/continual.py --mode full --tasks 50       # SmolLM2, 50 tasks (hours)
    .venv/bin/python benchmarks/continual.py --mode full --sequence pubmedqa --tasks 50

Sequences: `synthetic` (`make_corpus(tasks=N)`: each task adds entities of the next domain and
revises facts of earlier tasks; R asks every fact in the phrasing it was not trained with) and
`pubmedqa` (../shared/corpora/pubmedqa: its abstracts 20 per task, 6 of each task's questions
held out of training and asked in R). Methods (same tasks, seeds, prompts and base model; the
closed-book ones may get their own step budget): ours (LoRA + retrieval updated from the
previous version with a fixed replay reservoir, optionally online EWC and distillation), LoRA +
retrieval without replay, LoRA + retrieval with replay only, an adapter frozen after task 1 with
the index still updated, peft OSF + retrieval, retraining from scratch, RAG without an adapter,
and the closed-book naive, replay and OSF rows for reference.

Prints the summary table (average accuracy with its interval over seeds and by bootstrap over
facts, the paired test against ours, backward transfer, forgetting, clipped retention, training
and general-capability accuracy, revised facts) and per-task costs; writes JSON, PNG plots
(accuracy-matrix heatmaps, retention, update time and peak RSS per task) into --out, and logs
them to MLflow when --tracking-uri is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")
# oneDNN keeps up to 1,024 compiled kernels, one per new tensor shape. Before the trainer padded
# batches to a few shapes (trainer.PAD_MULTIPLE), keeping none cut RSS growth from 27 to 11 MB a
# task over the first 10 tasks; it stays off so that runs compare with those (BENCHMARKS.md)
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness and the tiny test model

from benchmarks.continual_goals import goal_rows, paired_test, ran, regular_updates  # noqa: E402
from benchmarks.continual_harness import (  # noqa: E402
    LABELS,
    METHODS,
    Settings,
    load_tasks,
    pubmedqa_tasks,
    quick_setup,
    run_sequence,
    run_settings,
)
from components.continual.metrics import bootstrap_average_accuracy, seed_interval  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PUBMEDQA = ROOT.parent / "shared" / "corpora" / "pubmedqa"
GENERAL = ROOT / "benchmarks" / "general_questions.jsonl"
# OSF keeps all but the 8 smallest singular directions frozen: 8 trainable ranks, like LoRA r=8
OSF_R8 = {"target_modules": ["q_proj", "v_proj"], "rank_pattern": {"q_proj": 568, "v_proj": 184}}


def full_setup(folder: Path, tasks: int, sequence: str, corpus_seed: int) -> tuple[list, Settings]:
    """SmolLM2-135M on the synthetic sequence (k=2 whole-document passages) or on PubMedQA
    (k=1: an abstract is ~350 tokens; prompts up to 512 tokens)."""
    general = [json.loads(line) for line in GENERAL.read_text().splitlines()]
    common = {"base_model": "smollm2-135m-instruct", "steps": 12, "lr": 1e-3, "bf16": True, "osf": OSF_R8}
    if sequence == "pubmedqa":
        settings = Settings(**common, k=1, max_length=512, max_new_tokens=4, general_questions=general)
        return pubmedqa_tasks(PUBMEDQA, tasks=tasks, seed=corpus_seed), settings
    from components.data.synthetic import make_corpus

    if not (folder / "tasks").is_dir():
        make_corpus(
            folder / "tasks", seed=corpus_seed, tasks=tasks, entities_per_task=2, revisions_per_task=1,
            test_share=0.0,
        )  # fmt: skip
    return load_tasks(folder / "tasks"), Settings(**common, k=2, general_questions=general)


def plots(results: list[dict], out: Path) -> list[Path]:
    """Accuracy-matrix heatmaps, retention, update time and peak RSS per task, for each method's
    first seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    firsts = list({r["method"]: r for r in reversed(results)}.values())[::-1]
    paths = []
    fig, axes = plt.subplots(1, len(firsts), figsize=(3.2 * len(firsts), 3.2), squeeze=False)
    for ax, result in zip(axes[0], firsts, strict=True):
        ax.imshow(np.array(result["R"], dtype=float), vmin=0, vmax=1, cmap="viridis")
        ax.set_title(result["method"], fontsize=8)
        ax.set_xlabel("task j")
        ax.set_ylabel("after task i")
    fig.tight_layout()
    paths.append(out / "accuracy_matrix.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    for key, label, name in (
        ("retention", "final / just-learned accuracy (clipped at 1)", "retention.png"),
        ("seconds", "update wall time (s)", "update_time.png"),
        ("peak_rss_mb", "peak RSS during the update, dashed before it (MB)", "peak_rss.png"),
    ):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for result in firsts:
            line = ax.plot(_curve(result, key), marker=".", label=result["method"])[0]
            if key == "peak_rss_mb" and "rss_before_mb" in result["per_task"][0]:  # dashed: before the update
                ax.plot(_curve(result, "rss_before_mb"), linestyle="--", color=line.get_color())
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


def _curve(result: dict, key: str) -> list[float]:
    """One method's per-task series; tasks a method skipped (scratch between retrainings) are gaps."""
    if key == "retention":
        r = np.array(result["R"], dtype=float)
        diag = np.diag(r)
        return [min(r[-1, j] / diag[j], 1.0) if diag[j] > 0 else np.nan for j in range(len(r))]
    return [p[key] if ran(p) else np.nan for p in result["per_task"]]


COLUMNS = (
    "method",
    "seeds",
    "avg accuracy (held-out), mean ± 95% over seeds",
    "bootstrap 95% over facts",
    "difference to ours (method − ours), McNemar p",
    "backward transfer",
    "forgetting",
    "retention (clipped)",
    "training accuracy",
    "general accuracy",
    "revised: new / old value",
    "params",
    "update s (first at the last task's steps / last)",
    "peak RSS MB (first / last)",
)


def _pm(values: list[float], digits: int = 3) -> str:
    mean, half = seed_interval(values)
    if mean != mean:
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if half == half else "")


def versus_ours(runs: list[dict], ours: list[dict]) -> str:
    """The paired difference with ours over the facts both answered, pooled over shared seeds."""
    test = paired_test(runs, ours)
    if test is None:
        return "-"
    mark = " (significant)" if test["p_value"] < 0.05 else ""
    return f"{-test['difference']:+.3f}, p={test['p_value']:.3g}{mark}"


def summary_row(runs: list[dict], ours: list[dict]) -> list[str]:
    """One method's row over its seeds."""
    first = runs[0]
    boots = [bootstrap_average_accuracy(r["final"], r["task_of"], seed=r["seed"]) for r in runs if r["final"]]
    boot = f"[{np.mean([b[0] for b in boots]):.3f}, {np.mean([b[1] for b in boots]):.3f}]" if boots else "-"
    new_value = [r["revised"].get("answered_new_value", np.nan) for r in runs]
    old_value = [r["revised"].get("answered_old_value", np.nan) for r in runs]
    costs = first["per_task"]
    done = [p for p in costs if ran(p)]
    regular = regular_updates(first) or done  # update time compares updates of the same budget
    return [
        LABELS.get(first["method"], first["method"]),
        ",".join(str(r["seed"]) for r in runs),
        _pm([r["average_accuracy"] for r in runs]),
        boot,
        versus_ours(runs, ours),
        _pm([r.get("backward_transfer", np.nan) for r in runs]),
        _pm([r.get("forgetting", np.nan) for r in runs]),
        _pm([r.get("retention", np.nan) for r in runs]),
        _pm([r.get("training_accuracy", np.nan) for r in runs]),
        _pm([r.get("general_accuracy", np.nan) for r in runs]),
        f"{np.nanmean(new_value):.2f} / {np.nanmean(old_value):.2f}"
        if first["revised"].get("count")
        else "-",
        f"{costs[-1]['parameters']:,}",
        f"{regular[0]['seconds']:.1f} / {done[-1]['seconds']:.1f}" if done else "-",
        f"{done[0]['peak_rss_mb']:.0f} / {done[-1]['peak_rss_mb']:.0f}" if done else "-",
    ]


def table(results: list[dict]) -> list[str]:
    """The markdown table, one row per method in METHODS order, seeds aggregated."""
    by_method: dict[str, list[dict]] = {}
    for result in results:
        by_method.setdefault(result["method"], []).append(result)
    ours = by_method.get("ours", [])
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    for method in sorted(by_method, key=lambda m: METHODS.index(m) if m in METHODS else len(METHODS)):
        lines.append("| " + " | ".join(summary_row(by_method[method], ours)) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--mode", choices=("quick", "full"), default="quick")
    parser.add_argument("--sequence", choices=("synthetic", "pubmedqa"), default="synthetic")
    parser.add_argument("--tasks", type=int, default=None, help="tasks in the sequence (quick 5, full 50)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1], help="training seeds, each run in full")
    parser.add_argument("--corpus-seed", type=int, default=1, help="the sequence itself (the same for all)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per task (full: 12)")
    parser.add_argument(
        "--first-steps",
        type=int,
        default=None,
        help="every adapter's steps on task 1, where it learns the answer format (default: --steps)",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="answer length in R (full: synthetic 12, pubmedqa 4)"
    )
    parser.add_argument("--k", type=int, default=None, help="passages per question (synthetic 2, pubmedqa 1)")
    parser.add_argument(
        "--chunk-tokens",
        type=int,
        default=0,
        help="index the chunk stage's windows of N embedder tokens (overlap 24); 0: every document whole",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs (method, seed) already in --out/results.json and run only the others",
    )
    parser.add_argument("--ewc-weight", type=float, default=0.0)
    parser.add_argument("--distill-weight", type=float, default=0.0)
    parser.add_argument(
        "--general-anchors",
        type=int,
        default=0,
        help="ours and ours_anchors: general questions answered by the base model, replayed (as "
        "continual-update's general_anchors); ours_anchors takes 16 when this is 0",
    )
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
        tasks, settings = quick_setup(work, args.tasks or 5, args.corpus_seed)
    else:
        tasks, settings = full_setup(work, args.tasks or 50, args.sequence, args.corpus_seed)
    settings.ewc_weight, settings.distill_weight = args.ewc_weight, args.distill_weight
    settings.general_anchors = args.general_anchors
    settings.steps = args.steps or settings.steps
    settings.first_steps = args.first_steps
    settings.k = args.k or settings.k
    settings.chunk_tokens = args.chunk_tokens
    settings.max_new_tokens = args.max_new_tokens or settings.max_new_tokens
    full = args.mode == "full"
    settings.closed_book_steps = args.closed_book_steps
    settings.eval_every = args.eval_every or (5 if full else 1)
    settings.scratch_every = args.scratch_every or (5 if full else 1)
    results = _finished(args.out / "results.json", len(tasks), settings) if args.resume else []
    done = {(r["method"], r["seed"]) for r in results}
    for seed in args.seeds:
        settings.seed = seed
        for method in args.methods:
            if (method, seed) in done:
                continue
            results.append(run_sequence(method, tasks, settings, work / f"{method}-s{seed}"))
            # written after every run, so a long run that is stopped keeps what it finished
            (args.out / "results.json").write_text(json.dumps(results, indent=2))
            r = results[-1]
            print(f"done: {method} seed {seed}: avg {r['average_accuracy']:.3f}", flush=True)

    taught = sum(len(t.new) for t in tasks)
    print(f"{len(tasks)} tasks, {taught} facts, sequence {args.sequence}, mode {args.mode}")
    report(results, args.out, args.tracking_uri, f"{args.mode}-{args.sequence}-{len(tasks)}")


def _finished(path: Path, tasks: int, settings: Settings) -> list[dict]:
    """The runs a stopped benchmark wrote to `path`; refused if they ran another sequence length
    or other settings, which would not compare."""
    if not path.exists():
        return []
    results = json.loads(path.read_text())
    wanted = json.loads(json.dumps(run_settings(settings)))
    defaults = json.loads(json.dumps(run_settings(Settings(base_model=settings.base_model))))
    for r in results:
        # a setting added since a run was written counts as its default there
        ran = {**defaults, **r.get("settings", {})}
        if len(r["per_task"]) != tasks or ran != wanted:
            raise SystemExit(
                f"{path}: {r['method']} seed {r['seed']} ran {len(r['per_task'])} tasks with "
                f"{r.get('settings')}, not {tasks} with {wanted}; choose another --out"
            )
    return results


def report(results: list[dict], out: Path, tracking_uri: str | None, name: str) -> None:
    """Print the table, write results.json and the PNG plots into `out`, log them to MLflow."""
    out.mkdir(parents=True, exist_ok=True)
    print("\n".join(table(results)))
    print("\n".join(goal_rows(results)))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    figures = plots(results, out)
    print("plots:", ", ".join(str(p) for p in figures))
    if tracking_uri:
        import mlflow

        from components.registry.mlflow_registry import configure

        configure(tracking_uri)
        with mlflow.start_run(run_name=f"continual-{name}"):
            for r in results:
                mlflow.log_metrics(
                    {f"{r['method']}.s{r['seed']}.{k}": v for k, v in r.items() if isinstance(v, float)}
                )
            mlflow.log_artifact(str(out / "results.json"))
            for path in figures:
                mlflow.log_artifact(str(path), "plots")


if __name__ == "__main__":
    main()
