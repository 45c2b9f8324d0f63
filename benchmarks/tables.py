"""Cells of the markdown tables benchmarks print, and the covid-qa benchmarks' command line."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORK = Path(__file__).resolve().parent / "results" / "synthesized" / "work"


def interval(figures: dict[str, float], key: str, signed: bool = False) -> str:
    """`0.123 [0.100, 0.150]` from `key`, `key_lo` and `key_hi` (`+0.012 [...]` when `signed`)."""
    form = "+.3f" if signed else ".3f"
    return f"{figures[key]:{form}} [{figures[key + '_lo']:{form}}, {figures[key + '_hi']:{form}}]"


def covid_main(
    argv: list[str] | None,
    description: str,
    report_of: Callable[[argparse.Namespace], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], str],
    results: Path,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> dict[str, Any]:
    """The command line of a covid-qa project benchmark: `--work`, `-S key=value` (and `extra`
    arguments); writes `results` and prints the table."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[])
    if extra is not None:
        extra(parser)
    report = report_of(parser.parse_args(argv))
    results.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    return report
