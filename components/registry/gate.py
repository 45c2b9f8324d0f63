"""The promotion gate: only what beats the base model and the current champion becomes challenger."""

from __future__ import annotations

from typing import Any


def gate(metrics: dict[str, Any], champion: Any, metric: str, min_gain: float) -> tuple[bool, str]:
    """(promote, reason) for an evaluate.json against the champion version (or None)."""
    if not metrics.get("questions"):
        return False, "no held-out questions were evaluated, so there is nothing to compare"
    ours, base = metrics["adapter"][metric], metrics["base"][metric]
    if ours <= base:
        return (
            False,
            f"adapter {metric} {ours:.3f} does not beat the base model without retrieval ({base:.3f})",
        )
    if champion is None:
        return True, f"no champion yet; adapter {metric} {ours:.3f} beats the base model ({base:.3f})"
    theirs = float(champion.tags.get(f"adapter.{metric}", "nan"))
    if not ours > theirs + min_gain:
        return (
            False,
            f"adapter {metric} {ours:.3f} does not beat champion v{champion.version} ({theirs:.3f})",
        )
    return True, f"adapter {metric} {ours:.3f} beats champion v{champion.version} ({theirs:.3f})"
