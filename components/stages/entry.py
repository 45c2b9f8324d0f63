"""What every stage entry point shares: load and validate params, run, write the metrics, exit codes.

Not a stage itself: `dvc.yaml` runs the stage modules beside it, each of which calls
`stage_main(name, run)`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.core.artifacts import SchemaMismatch, write_json
from components.core.config import DEFAULT_PARAMS_FILE, ParamsError, load_params_file
from components.core.drills import STAGE_ENV, kill_point
from components.core.environment import apply_offline_env
from components.core.params import PipelineParams, parse_params
from components.core.paths import Paths

EX_IOERR = 74  # exit code for I/O errors: the Prefect flow retries these
FAIL_STAGE_ENV = "RETRO_FAIL_STAGE"

StageRun = Callable[[PipelineParams, Paths], "dict[str, Any] | None"]


def rehearse_failure(name: str) -> None:
    """Fail on purpose when RETRO_FAIL_STAGE names this stage (comma-separated names allowed).

    For failure drills: a deployment run with this variable in its environment shows what a
    broken stage does to the registry, the champion alias and the DVC workspace (nothing).
    """
    wanted = {s.strip() for s in os.environ.get(FAIL_STAGE_ENV, "").split(",") if s.strip()}
    if name in wanted:
        raise RuntimeError(
            f"failure rehearsal: {FAIL_STAGE_ENV}={os.environ[FAIL_STAGE_ENV]} names this stage"
        )


def execute(
    name: str, run: StageRun, params: dict[str, Any], root: Path | str = "."
) -> dict[str, Any] | None:
    """Validate the whole params mapping, run the stage under `root`, write its metrics file.

    A run that returns None (a secondary process of a data-parallel launch) writes nothing.
    """
    parsed = parse_params(params)
    paths = parsed.layout(root)
    metrics = run(parsed, paths)
    if metrics is not None:
        write_json(paths.metrics_of(name), metrics)
    return metrics


def stage_main(name: str, run: StageRun) -> None:
    """The thin CLI of a stage: read params.yaml, run, print a summary; clear exit codes."""
    parser = argparse.ArgumentParser(prog=f"retro-stage-{name}", description=f"Run the {name} stage.")
    parser.add_argument("--params", default=str(DEFAULT_PARAMS_FILE), help="params file (params.yaml)")
    parser.add_argument("--root", default=".", help="project root holding data/")
    args = parser.parse_args()
    os.environ[STAGE_ENV] = name  # failure drills (components/core/drills.py) name their stage
    apply_offline_env()
    logging.basicConfig(
        level=os.environ.get("RETRO_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "great_expectations", "mlflow", "alembic", "faiss", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        rehearse_failure(name)
        params = load_params_file(args.params)
        kill_point("start")
        summary = execute(name, run, params, args.root)
    except ParamsError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        sys.exit(2)
    except (ValueError, RuntimeError, FileNotFoundError, FileExistsError, SchemaMismatch) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        print(f"{name}: I/O error: {exc}", file=sys.stderr)
        sys.exit(EX_IOERR)
    if summary is not None:
        print(json.dumps({"stage": name, **summary}, default=str))
