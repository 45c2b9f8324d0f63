"""What every stage shares: the data layout, shared params sections and the CLI wrapper."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field

from components.adapters.base_model import DEFAULT_BASE_MODEL
from components.config import (
    DEFAULT_PARAMS_FILE,
    ParamsError,
    StrictModel,
    load_params_file,
    parse_section,
)
from components.embed.encoder import DEFAULT_EMBEDDER

log = logging.getLogger("retro")

EX_IOERR = 74  # exit code for I/O errors: the Prefect flow retries these


class Layout:
    """Where each stage reads and writes, relative to the project root (mirrors dvc.yaml)."""

    def __init__(self, root: Path | str = ".") -> None:
        root = Path(root)
        self.root = root
        self.interim = root / "data" / "interim"
        self.documents = self.interim / "documents.parquet"
        self.qa = self.interim / "qa.parquet"
        self.quarantine = root / "data" / "quarantine.jsonl"
        self.chunks = self.interim / "chunks.parquet"
        self.embeddings = self.interim / "embeddings"
        self.index = root / "data" / "index"
        self.base_adapter = root / "data" / "models" / "adapter"
        self.current_adapter = root / "data" / "models" / "current"
        self.metrics = root / "data" / "metrics"
        self.dvc_lock = root / "dvc.lock"


class ModelParams(StrictModel):
    """The `model` section: which base model and embedder every stage uses."""

    base: str = DEFAULT_BASE_MODEL
    embedder: str = DEFAULT_EMBEDDER
    dtype: Literal["float32", "bfloat16"] = "float32"
    seed: int = 0


class RetrievalParams(StrictModel):
    """The `retrieval` section: how passages are found for training, evaluation and serving."""

    k: int = Field(3, ge=1, le=50)
    mode: Literal["dense", "bm25", "hybrid"] = "hybrid"
    rrf_k: int = Field(60, ge=1)


def load_shared(params: dict[str, Any]) -> tuple[ModelParams, RetrievalParams]:
    return parse_section(ModelParams, params, "model"), parse_section(RetrievalParams, params, "retrieval")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a crash never leaves half a metrics file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


def read_table(path: Path, stage: str) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the {stage} stage first")
    return pd.read_parquet(path)


def versions_in(qa_or_docs: pd.DataFrame) -> list[str]:
    """Corpus versions present, oldest first (v2 before v10)."""
    return sorted(set(qa_or_docs["version"]), key=lambda v: (len(v), v))


FAIL_STAGE_ENV = "RETRO_FAIL_STAGE"


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


def stage_main(name: str, run: Callable[[dict[str, Any], Layout], dict[str, Any]]) -> None:
    """The thin CLI of a stage: read params.yaml, run, print a summary; clear exit codes."""
    parser = argparse.ArgumentParser(prog=f"retro-stage-{name}", description=f"Run the {name} stage.")
    parser.add_argument("--params", default=str(DEFAULT_PARAMS_FILE), help="params file (params.yaml)")
    parser.add_argument("--root", default=".", help="project root holding data/")
    args = parser.parse_args()
    logging.basicConfig(
        level=os.environ.get("RETRO_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "great_expectations", "mlflow", "alembic", "faiss", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        rehearse_failure(name)
        summary = run(load_params_file(args.params), Layout(args.root))
    except ParamsError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        sys.exit(2)
    except (ValueError, RuntimeError, FileNotFoundError, FileExistsError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        print(f"{name}: I/O error: {exc}", file=sys.stderr)
        sys.exit(EX_IOERR)
    print(json.dumps({"stage": name, **summary}, default=str))
