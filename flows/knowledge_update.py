"""The knowledge-update flow: bring a new corpus version in and run the incremental path.

Ingest and chunk read every version; embed encodes only chunks it has never seen; index makes the
next index version from its parent; adapter-train is skipped (its data is the first version);
continual-update trains the current adapter on the new and revised facts with its fixed replay
reservoir; evaluate and register record the new linked adapter/index pair.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from prefect import flow, get_run_logger

from components.config import load_params_file
from components.data.corpus import list_versions
from flows.pipeline import retro_pipeline


def add_version(root: Path | str, folder: Path | str, name: str | None = None) -> str:
    """Copy `folder` (with `docs/`, optionally `qa.jsonl`) into the corpus as its next version."""
    root, folder = Path(root), Path(folder)
    if not (folder / "docs").is_dir():
        raise FileNotFoundError(f"{folder} has no docs/ folder (see the data contract in README.md)")
    source = Path(load_params_file(root / "params.yaml")["ingest"]["source"])
    source = source if source.is_absolute() else root / source
    versions = [v for v, _ in list_versions(source)]
    if not (source / versions[-1]).is_dir() or not re.fullmatch(r"[vt]\d+", versions[-1]):
        raise ValueError(f"the corpus at {source} is not versioned: move its docs/ into {source}/v1 first")
    if name is None:
        last = versions[-1]
        number = int(last[1:]) + 1
        name = f"t{number:03d}" if last.startswith("t") else f"v{number}"
    if not re.fullmatch(r"[vt]\d+", name) or (source / name).exists():
        raise ValueError(f"version name {name!r} must look like v3 or t004 and not exist in {source}")
    shutil.copytree(folder, source / name)
    return name


@flow(name="knowledge-update", log_prints=True)
def knowledge_update(root: str = ".", corpus: str | None = None, version: str | None = None) -> dict:
    """Add `corpus` as the next version (when given), then run every stage; unchanged ones are skipped."""
    logger = get_run_logger()
    if corpus:
        added = add_version(root, corpus, version)
        logger.info("added %s as corpus version %s", corpus, added)
    return retro_pipeline(root=root)
