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

from components.core.config import load_params_file
from components.data.corpus import list_versions
from flows.pipeline import retro_pipeline
from flows.watch import IGNORED_SUFFIXES, folder_content_hash


def add_version(root: Path | str, folder: Path | str, name: str | None = None) -> str | None:
    """Copy `folder` (with `docs/`, optionally `qa.jsonl`) into the corpus as its next version.

    Returns the new version's name, or None when the folder holds exactly the newest version's
    content (a repeated trigger or an unchanged nightly run adds nothing).
    """
    root, folder = Path(root), Path(folder)
    if not (folder / "docs").is_dir():
        raise FileNotFoundError(f"{folder} has no docs/ folder (see the data contract in README.md)")
    source = Path(load_params_file(root / "params.yaml")["ingest"]["source"])
    source = source if source.is_absolute() else root / source
    found = list_versions(source)
    versions = [v for v, _ in found]
    if not (source / versions[-1]).is_dir() or not re.fullmatch(r"[vt]\d+", versions[-1]):
        raise ValueError(f"the corpus at {source} is not versioned: move its docs/ into {source}/v1 first")
    if folder_content_hash(folder)[0] == folder_content_hash(found[-1][1])[0]:
        return None
    if name is None:
        last = versions[-1]
        number = int(last[1:]) + 1
        name = f"t{number:03d}" if last.startswith("t") else f"v{number}"
    if not re.fullmatch(r"[vt]\d+", name) or (source / name).exists():
        raise ValueError(f"version name {name!r} must look like v3 or t004 and not exist in {source}")
    staging = source / f".{name}.incoming"  # copied beside, renamed when complete
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(
        folder, staging, ignore=shutil.ignore_patterns(".*", *(f"*{s}" for s in IGNORED_SUFFIXES))
    )
    staging.rename(source / name)
    return name


@flow(name="knowledge-update", log_prints=True)
def knowledge_update(root: str = ".", corpus: str | None = None, version: str | None = None) -> dict:
    """Add `corpus` as the next version when its content is new, then run every stage.

    Stages whose inputs did not change are skipped by DVC, so an unchanged corpus costs seconds.
    """
    logger = get_run_logger()
    if corpus:
        folder = Path(corpus) if Path(corpus).is_absolute() else Path(root) / corpus
        added = add_version(root, folder, version)
        if added is None:
            logger.info("%s holds the newest corpus version's content: nothing to add", folder)
        else:
            logger.info("added %s as corpus version %s", folder, added)
    return retro_pipeline(root=root)
