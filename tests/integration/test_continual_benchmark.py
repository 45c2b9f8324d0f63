"""`benchmarks/continual.py` from the command line: quick mode, three methods side by side, the
table, the JSON, the PNG plots, the figures and plots logged to a real MLflow store, and a
resumed run that keeps what was finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_writes_table_json_plots_and_mlflow(tmp_path: Path) -> None:
    out, store = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [
        sys.executable,
        "benchmarks/continual.py",
        "--mode",
        "quick",
        "--tasks",
        "2",
        "--methods",
        "rag",
        "naive",
        "ours",
        "--closed-book-steps",
        "5",
        "--out",
        str(out),
        "--work",
        str(tmp_path / "work"),  # its own scratch folder: a second run must not find the first's
        "--tracking-uri",
        store,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    lines = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    table, goals = (
        lines[: lines.index("| goal | measured | met? |")],
        lines[lines.index("| goal | measured | met? |") :],
    )
    assert len(goals) == 1 + 8 and goals[1].startswith(
        "| ours beats the frozen adapter"
    )  # every goal, one row
    from benchmarks.continual_harness import LABELS

    rows = [line.split(" | ")[0] for line in table]
    assert rows == ["| method", *(f"| {LABELS[m]}" for m in ("ours", "rag", "naive"))]  # METHODS order
    results = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in results] == ["rag", "naive", "ours"]
    for result in results:
        assert len(result["R"]) == 2 and len(result["per_task"]) == 2
    assert results[0]["per_task"][0]["parameters"] == 0  # RAG has no adapter
    assert results[1]["per_task"][0]["parameters"] == results[2]["per_task"][0]["parameters"] > 0
    plots = {"accuracy_matrix.png", "retention.png", "update_time.png", "peak_rss.png"}
    for name in plots:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    mlflow.set_tracking_uri(store)
    [run] = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.data.metrics["ours.s1.average_accuracy"] == results[2]["average_accuracy"]
    logged = {a.path for a in mlflow.artifacts.list_artifacts(run_id=run.info.run_id, artifact_path="plots")}
    assert logged == {f"plots/{name}" for name in plots}

    # a stopped benchmark resumes: finished runs are kept, not rerun; other settings are refused
    resumed = [*command[: command.index("--tracking-uri")], "--resume"]
    again = subprocess.run(resumed, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "done:" not in again.stdout and json.loads((out / "results.json").read_text()) == results
    other = [*resumed[: resumed.index("--closed-book-steps") + 1], "6", *resumed[resumed.index("5") + 1 :]]
    refused = subprocess.run(other, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "choose another --out" in refused.stderr
    assert json.loads((out / "results.json").read_text()) == results
