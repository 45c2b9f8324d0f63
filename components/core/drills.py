"""Failure drills: a stage that kills itself at a named point, to show what a crash leaves behind.

`RETRO_KILL_AT=<stage>:<point>[:<n>]` sends SIGKILL to the stage process the n-th time (default
the first) it passes `point`. Nothing is cleaned up, as after an out-of-memory kill or a lost
machine: no `finally`, no `atexit`. The points:

- `start`: the stage's params are read, nothing is written yet;
- `write`: an output file has just landed (atomic JSON, JSON lines and parquet writes);
- `swap`: inside a folder swap (`staged_swap`), the old folder moved aside, the new one not yet
  in its place;
- `registered-index`: register has created the index version and not yet the adapter version.

The kill test (`tests/e2e/test_kill_recovery.py`) uses it; an operator can run the same drill
against a deployment. `RETRO_STAGE` names the stage of the process (set by the stage entry point).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_ENV = "RETRO_KILL_AT"
STAGE_ENV = "RETRO_STAGE"
KILL_POINTS = ("start", "write", "swap", "registered-index")
_passed: Counter[str] = Counter()


def kill_point(point: str) -> None:
    """SIGKILL this process when `RETRO_KILL_AT` names this stage and `point` (at its n-th pass)."""
    spec = os.environ.get(KILL_ENV, "")
    if not spec or os.environ.get(STAGE_ENV) is None:
        return
    stage, _, rest = spec.partition(":")
    wanted, _, nth = rest.partition(":")
    if stage != os.environ[STAGE_ENV] or wanted != point:
        return
    _passed[point] += 1
    if _passed[point] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
