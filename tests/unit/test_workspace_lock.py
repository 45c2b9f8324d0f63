"""One run at a time in a workspace (components/core/workspace_lock.py): a second run waits with
a message or refuses with --no-wait, a lock left by a killed run is taken over, and a command
that holds the lock can run a flow that takes it again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from components.core.workspace_lock import LOCK_FILE, WorkspaceBusy, workspace_lock
from tests.conftest import BIN

HOLD = """
import sys, time
from components.core.workspace_lock import workspace_lock
with workspace_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def holder(root: Path) -> subprocess.Popen:
    """Another process holding the workspace's lock (until it is stopped)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_refuses_or_waits_for_the_first(tmp_path: Path) -> None:
    other = holder(tmp_path)
    try:
        with pytest.raises(WorkspaceBusy, match=f"pid {other.pid}"), workspace_lock(tmp_path, wait=False):
            pass
        said: list[str] = []
        entered = threading.Event()

        def second() -> None:
            with workspace_lock(tmp_path, say=said.append):
                entered.set()

        waiting = threading.Thread(target=second)
        waiting.start()
        time.sleep(0.5)
        assert not entered.is_set() and said and f"pid {other.pid}" in said[0]  # it waits, and says for whom
    finally:
        other.terminate()
        other.wait()
    waiting.join(timeout=10)
    assert entered.is_set()  # it ran once the first one ended


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    killed = holder(tmp_path)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert (tmp_path / LOCK_FILE).read_text()  # its record is still there
    said: list[str] = []
    # re-entrant: a flow run by the command that holds it takes it again
    with workspace_lock(tmp_path, wait=False, say=said.append), workspace_lock(tmp_path, wait=False):
        pass
    assert said == [f"taking over the lock left by {said[0].split('left by ')[1]}"]
    assert f"pid {killed.pid}" in said[0] and "no longer running" in said[0]
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released, with nothing left behind


def test_retro_pipeline_no_wait_exits_75_while_another_run_holds_the_workspace(tmp_path: Path) -> None:
    other = holder(tmp_path)
    try:
        result = subprocess.run(
            [str(BIN / "retro"), "pipeline", "--no-wait"], cwd=tmp_path, capture_output=True, text=True
        )
    finally:
        other.terminate()
        other.wait()
    assert result.returncode == 75, result.stderr
    assert f"pid {other.pid}" in result.stderr and "--no-wait" in result.stderr
