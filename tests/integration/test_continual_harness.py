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
import torch

from benchmarks.continual_harness import quick_setup, run_sequence


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("continual")
    tasks, settings = quick_setup(folder, tasks=5, seed=1)
    settings.ewc_weight, settings.distill_weight = 1.0, 0.5
    return run_sequence("ours", tasks, settings, folder / "work")


def test_nothing_grows_with_the_number_of_tasks(ours: dict) -> None:
    per_task = ours["per_task"]
    assert len(per_task) == 5
    assert all(p["longest_tokens"] > 0 for p in per_task)  # recorded beside the peak memory
    assert len({p["parameters"] for p in per_task}) == 1 and per_task[0]["parameters"] > 0
    assert len({p["adapter_bytes"] for p in per_task}) == 1 and per_task[0]["adapter_bytes"] > 0
    assert per_task[-1]["peak_rss_mb"] <= 1.10 * per_task[0]["peak_rss_mb"]
    assert all(0 < p["rss_before_mb"] <= p["peak_rss_mb"] for p in per_task)  # what stays, beside the peak


def test_revised_facts_follow_the_new_value_and_the_old_text_is_gone(ours: dict) -> None:
    revised = ours["revised"]
    assert revised["count"] >= 3
    assert revised["old_value_retrieved"] == 0.0
    assert revised["trained_phrasing_new_value"] >= 0.5 > revised["trained_phrasing_old_value"]
    assert revised["answered_new_value"] > revised["answered_old_value"]  # asked in other words too


def test_accuracy_matrix_and_summary(ours: dict) -> None:
    r = np.array(ours["R"], dtype=float)
    assert r.shape == (5, 5)
    assert not np.isnan(np.tril(r)).any() and np.isnan(r[np.triu_indices(5, 1)]).all()
    assert {"average_accuracy", "backward_transfer", "forgetting", "retention"} <= set(ours)
    assert 0.0 <= ours["retention"] <= 1.0  # clipped
    # R asks every fact in the phrasing it was not trained with; each final outcome is kept
    assert set(ours["final"]) == set(ours["task_of"]) and len(ours["final"]) >= 10
    assert 0.0 <= ours["training_accuracy"] <= 1.0


def test_frozen_adapter_learns_task_one_only_while_its_index_keeps_up(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from benchmarks.continual_harness import Learner

    folder = tmp_path_factory.mktemp("frozen")
    tasks, settings = quick_setup(folder, tasks=2, seed=2)
    settings.steps = 4
    learner = Learner("frozen", settings, folder / "work")
    weights = lambda: [p.detach().clone() for p in learner.model.trainable_parameters()]  # noqa: E731
    before = weights()
    learner.learn(tasks[0], 0)
    after_one = weights()
    learner.learn(tasks[1], 1)
    assert any(not torch.equal(a, b) for a, b in zip(before, after_one, strict=True))  # task 1 trained
    assert all(torch.equal(a, b) for a, b in zip(after_one, weights(), strict=True))  # then frozen
    assert len(learner.retriever.bm25_ids) == len(tasks[1].docs) > len(tasks[0].docs)  # the index follows


def test_first_task_budget_and_scratch_retraining_with_the_same_total(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Every adapter gets `first_steps` on task 1 and `steps` after; scratch, retrained only at
    the end, gets what a sequential learner spent in all (scaled by the items it relearns)."""
    folder = tmp_path_factory.mktemp("budget")
    tasks, settings = quick_setup(folder, tasks=2, seed=3)
    settings.steps, settings.first_steps, settings.scratch_every = 2, 5, 10
    settings.general_questions = [{"question": "What is 2 plus 3?", "answers": ["5", "five"]}]
    lora = run_sequence("lora_rag", tasks, settings, folder / "lora")
    assert [p["steps"] for p in lora["per_task"]] == [5, 2]
    [(question, answer)] = lora["general_answers"].items()  # closed book, its own answer length
    assert isinstance(answer, str) and lora["general"][question] in (0.0, 1.0)
    scratch = run_sequence("scratch", tasks, settings, folder / "scratch")
    items = len(tasks[1].answers)
    assert scratch["per_task"][0]["steps"] == 0  # not retrained at task 1
    assert scratch["per_task"][1]["steps"] == 3 + round(2 * items / len(tasks[1].trained()))
    assert scratch["settings"]["first_steps"] == 5 and "seed" not in scratch["settings"]


def test_unknown_method_is_refused(tmp_path: Path) -> None:
    from benchmarks.continual_harness import Learner, Settings

    with pytest.raises(ValueError, match="unknown method 'o-lora'"):
        Learner("o-lora", Settings(base_model="x"), tmp_path)
