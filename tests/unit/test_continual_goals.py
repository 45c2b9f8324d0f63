"""The continual benchmark's goals table on constructed results with known answers: which goals
are met, missed or not measured, and the figures that decide them."""

from __future__ import annotations

from benchmarks.continual_goals import goal_rows, paired_test


def _run(
    method: str,
    seed: int,
    right: int,
    *,
    seconds=(30.0, 10.0, 10.0, 11.5),
    peaks=(1000, 1000, 1000, 1200),
    general=0.6,
) -> dict:
    final = {f"q{i}": float(i < right) for i in range(40)}
    per_task = [
        {"seconds": s, "peak_rss_mb": float(m), "steps": 24 if i == 0 else 4, "parameters": 100}
        for i, (s, m) in enumerate(zip(seconds, peaks, strict=True))
    ]
    return {
        "method": method,
        "seed": seed,
        "final": final,
        "average_accuracy": right / 40,
        "retention": 0.95,
        "general_accuracy": general,
        "per_task": per_task,
    }


def _verdicts(results: list[dict]) -> dict[str, tuple[str, str]]:
    rows = [line.strip("| ").split(" | ") for line in goal_rows(results)[2:]]
    return {goal: (measured, met) for goal, measured, met in rows}


def test_goals_met_missed_and_not_measured() -> None:
    results = [
        _run("ours", 1, 36),
        _run("ours", 2, 36),
        _run("frozen", 1, 10),
        _run("frozen", 2, 10),  # 52 facts only ours answered, pooled over both seeds
        _run("scratch", 1, 37),
        _run("rag", 1, 0, general=0.8),
    ]
    verdicts = _verdicts(results)
    assert verdicts["ours beats the frozen adapter, significantly"][1] == "yes"
    assert (
        "52 facts only ours answered, 0 only it"
        in verdicts["ours beats the frozen adapter, significantly"][0]
    )
    assert verdicts["ours beats LoRA + retrieval without replay, significantly"] == (
        "not run",
        "not measured",
    )
    assert verdicts["average accuracy within 2 points of retraining from scratch"] == (
        "ours − scratch = -0.025",
        "no",
    )
    assert verdicts["retention (clipped) > 0.90"] == ("0.950", "yes")
    # task 1's longer budget is not the reference: 11.5 / 10.0, not 11.5 / 30.0
    assert verdicts["update time, last task / first at the same budget < 1.1"][0].startswith("1.15")
    assert verdicts["update time, last task / first at the same budget < 1.1"][1] == "no"
    assert verdicts["zero parameter growth"][1] == "yes"
    assert verdicts["peak RSS last task / task 1 <= 1.10"] == ("1.20", "no")
    general = verdicts["general-capability accuracy within 2 points of the base model"]
    assert general == ("ours 0.600, base model (RAG row) 0.800", "no")


def test_paired_test_pools_shared_seeds_only() -> None:
    ours = [_run("ours", 1, 30), _run("ours", 2, 30)]
    other = [_run("lora_rag", 1, 20), _run("lora_rag", 3, 0)]  # seed 3 has no ours to pair with
    test = paired_test(other, ours)
    assert (test["ours_only"], test["theirs_only"]) == (10, 0)
    assert paired_test([_run("lora_rag", 5, 1)], ours) is None
    assert _verdicts([_run("frozen", 1, 1)]) == {"every goal": ("ours did not run", "not measured")}
