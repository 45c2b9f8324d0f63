"""The flow's stage task on a real DVC project and a real (temporary) Prefect API.

An I/O error (exit code 74) is retried; any other failure stops at once with the stage's output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FLAKY = """
import pathlib, sys
counter = pathlib.Path("attempts")
n = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(n + 1))
if n < FAILURES:
    print("disk went away", file=sys.stderr)
    sys.exit(CODE)
pathlib.Path("out.txt").write_text("ok")
"""


def _project(root: Path, code: int, failures: int) -> Path:
    root.mkdir(parents=True)
    (root / "flaky.py").write_text(FLAKY.replace("FAILURES", str(failures)).replace("CODE", str(code)))
    (root / "dvc.yaml").write_text(
        "stages:\n  ingest:\n    cmd: python flaky.py\n    deps: [flaky.py]\n    outs: [out.txt]\n"
    )
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], cwd=root, check=True)
    return root


def test_io_error_is_retried_then_succeeds(prefect_api, tmp_path: Path) -> None:  # noqa: ANN001
    from prefect import flow

    from flows.pipeline import run_stage

    root = _project(tmp_path / "p", code=74, failures=1)

    @flow
    def one_stage() -> dict:
        return run_stage.with_options(retry_delay_seconds=0)("ingest", str(root))

    one_stage()
    assert (root / "attempts").read_text() == "2"
    assert (root / "out.txt").read_text() == "ok"


def test_other_failures_are_not_retried(prefect_api, tmp_path: Path) -> None:  # noqa: ANN001
    from prefect import flow

    from flows.pipeline import StageFailed, run_stage

    root = _project(tmp_path / "p", code=1, failures=5)

    @flow
    def one_stage() -> dict:
        return run_stage.with_options(retry_delay_seconds=0)("ingest", str(root))

    with pytest.raises(StageFailed, match="disk went away"):
        one_stage()
    assert (root / "attempts").read_text() == "1"
