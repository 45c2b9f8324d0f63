"""Cells of the markdown tables benchmarks print."""

from __future__ import annotations


def interval(figures: dict[str, float], key: str, signed: bool = False) -> str:
    """`0.123 [0.100, 0.150]` from `key`, `key_lo` and `key_hi` (`+0.012 [...]` when `signed`)."""
    form = "+.3f" if signed else ".3f"
    return f"{figures[key]:{form}} [{figures[key + '_lo']:{form}}, {figures[key + '_hi']:{form}}]"
