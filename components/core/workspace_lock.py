"""One run at a time in a workspace: `retro pipeline`, `retro update`, `retro reindex` and the flows
of deployments hold `.retro/run.lock` while they run.

The lock is an OS file lock (`flock`), which the kernel releases when its process ends, however
it ends: a lock left by a killed run is free, and the next run takes it over (and says whose it
was). A second run waits for the first with a message, or refuses at once when asked not to wait.
The lock is re-entrant within a process, so a command that holds it can run a flow that takes it.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = Path(".retro") / "run.lock"
_held: dict[Path, int] = {}  # lock path -> depth, in this process
_guard = threading.Lock()


class WorkspaceBusy(RuntimeError):
    """Another run holds the workspace and the caller would not wait."""


def holder_of(path: Path) -> str:
    """Who holds (or last held) the lock, as its file records it."""
    try:
        found = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "an unknown run"
    if not found:
        return "an unknown run"
    return f"{found.get('command', 'a run')} (pid {found.get('pid')}, since {found.get('started')})"


@contextmanager
def workspace_lock(
    root: Path | str = ".",
    wait: bool = True,
    say: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
) -> Iterator[None]:
    """Hold the workspace's run lock for the block: wait for another run (telling `say` who it
    is), or raise WorkspaceBusy with `wait=False`."""
    path = (Path(root) / LOCK_FILE).resolve()
    with _guard:
        if _held.get(path):
            _held[path] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield
        finally:
            with _guard:
                _held[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        _acquire(handle, path, wait, say)
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        handle.write(json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv[:2]), "started": started}))
        handle.flush()
        with _guard:
            _held[path] = 1
        try:
            yield
        finally:
            with _guard:
                _held.pop(path, None)
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _acquire(handle, path: Path, wait: bool, say: Callable[[str], None]) -> None:  # noqa: ANN001
    """Take the lock; a record left by a run that ended is reported as taken over."""
    left = path.stat().st_size > 0
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = holder_of(path)
        if not wait:
            raise WorkspaceBusy(
                f"{holder} is running in this workspace ({path}); wait for it, or run again without --no-wait"
            ) from None
        say(f"waiting for {holder} to finish (it holds {path})")
        fcntl.flock(handle, fcntl.LOCK_EX)
        return
    if left:  # its process ended without releasing it (killed): the kernel freed the lock
        say(f"taking over the lock left by {holder_of(path)}, which is no longer running")
