"""The continual benchmark's quick mode: a tiny Llama learns a 5-task sequence with our method
(LoRA + incremental index + fixed replay reservoir + online EWC + distillation).

Invariants: nothing grows with the number of tasks (parameters, adapter bytes, peak memory), and
after the sequence revised facts follow their new values while the superseded text is never
retrieved. Learning quality on a tiny random model is not the point here; BENCHMARKS.md has it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.continual_harness import accuracy_summary, quick_setup, run_sequence


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("continual")
    tasks, settings = quick_setup(folder, tasks=5, seed=1)
    settings.ewc_weight, settings.distill_weight = 1.0, 0.5
    return run_sequence("ours", tasks, settings, folder / "work")


def test_nothing_grows_with_the_number_of_tasks(ours: dict) -> None:
    per_task = ours["per_task"]
    assert len(per_task) == 5
    assert len({p["parameters"] for p in per_task}) == 1 and per_task[0]["parameters"] > 0
    assert len({p["adapter_bytes"] for p in per_task}) == 1 and per_task[0]["adapter_bytes"] > 0
    assert per_task[-1]["peak_rss_mb"] <= 1.10 * per_task[0]["peak_rss_mb"]


def test_revised_facts_follow_the_new_value_and_the_old_text_is_gone(ours: dict) -> None:
    revised = ours["revised"]
    assert revised["count"] >= 3
    assert revised["old_value_retrieved"] == 0.0
    assert revised["answered_new_value"] >= 0.5 > revised["answered_old_value"]


def test_accuracy_matrix_and_summary(ours: dict) -> None:
    r = np.array(ours["R"], dtype=float)
    assert r.shape == (5, 5)
    assert not np.isnan(np.tril(r)).any() and np.isnan(r[np.triu_indices(5, 1)]).all()
    assert {"average_accuracy", "backward_transfer", "forgetting", "retention"} <= set(ours)


def test_summary_formulas() -> None:
    nan = float("nan")
    r = np.array([[1.0, nan, nan], [0.5, 0.8, nan], [0.5, 0.4, 1.0]])
    s = accuracy_summary(r)
    assert s["average_accuracy"] == pytest.approx((0.5 + 0.4 + 1.0) / 3)
    assert s["backward_transfer"] == pytest.approx(((0.5 - 1.0) + (0.4 - 0.8)) / 2)
    assert s["forgetting"] == pytest.approx(((1.0 - 0.5) + (0.8 - 0.4)) / 2)
    assert s["retention"] == pytest.approx((0.5 / 1.0 + 0.4 / 0.8) / 2)


def test_unknown_method_is_refused(tmp_path: Path) -> None:
    from benchmarks.continual_harness import Learner, Settings

    with pytest.raises(ValueError, match="unknown method 'o-lora'"):
        Learner("o-lora", Settings(base_model="x"), tmp_path)
