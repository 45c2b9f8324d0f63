"""The promotion gate (components/registry/gate.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from components.registry.gate import gate


def figures(adapter: float, base: float = 0.1, questions: int = 10) -> dict:
    return {"questions": questions, "adapter": {"f1": adapter}, "base": {"f1": base}}


def champion(f1: str | None, version: str = "3") -> SimpleNamespace:
    return SimpleNamespace(version=version, tags={} if f1 is None else {"adapter.f1": f1})


@pytest.mark.parametrize(
    ("metrics", "champ", "min_gain", "promote", "reason"),
    [
        (figures(0.5, questions=0), None, 0.0, False, "no held-out questions"),
        (figures(0.1), None, 0.0, False, "does not beat the base model"),
        (figures(0.5), None, 0.0, True, "no champion yet"),
        (figures(0.5), champion("0.4"), 0.0, True, "beats champion v3 (0.400)"),
        (figures(0.45), champion("0.4"), 0.1, False, "does not beat champion v3"),
        (figures(0.5), champion(None), 0.0, False, "(nan)"),
    ],
    ids=["no-questions", "below-base", "first", "beats-champion", "within-margin", "champion-without-figure"],
)
def test_gate_decisions(metrics: dict, champ: object, min_gain: float, promote: bool, reason: str) -> None:
    decided, why = gate(metrics, champ, "f1", min_gain)
    assert decided is promote and reason in why
