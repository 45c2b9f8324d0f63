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
from components.core.workspace_lock import workspace_lock
from components.data.corpus import list_versions
from components.data.delta import DeltaSummary, build_snapshot, make_versioned
from flows.pipeline import retro_pipeline
from flows.watch import IGNORED_SUFFIXES, folder_content_hash


def versioned_source(root: Path | str) -> tuple[Path, list[tuple[str, Path]], bool]:
    """The corpus folder of params.yaml, its versions, and whether a flat corpus was just turned
    into v1 (docs/ and qa.jsonl moved into v1/) so that a next version can go beside it."""
    root = Path(root)
    source = Path(load_params_file(root / "params.yaml")["ingest"]["source"])
    source = source if source.is_absolute() else root / source
    converted = make_versioned(source)
    return source, list_versions(source), converted


def _next_name(source: Path, versions: list[str], name: str | None) -> str:
    if name is None:
        last = versions[-1]
        number = int(last[1:]) + 1
        name = f"t{number:03d}" if last.startswith("t") else f"v{number}"
    if not re.fullmatch(r"[vt]\d+", name) or (source / name).exists():
        raise ValueError(f"version name {name!r} must look like v3 or t004 and not exist in {source}")
    return name


def add_version(root: Path | str, folder: Path | str, name: str | None = None) -> str | None:
    """Copy `folder` (a full snapshot: `docs/`, optionally `qa.jsonl`) into the corpus as its next
    version.

    Returns the new version's name, or None when the folder holds exactly the newest version's
    content (a repeated trigger or an unchanged nightly run adds nothing).
    """
    folder = Path(folder)
    if not (folder / "docs").is_dir():
        raise FileNotFoundError(f"{folder} has no docs/ folder (see the data contract in README.md)")
    source, found, _ = versioned_source(root)
    if folder_content_hash(folder)[0] == folder_content_hash(found[-1][1])[0]:
        return None
    name = _next_name(source, [v for v, _ in found], name)
    staging = source / f".{name}.incoming"  # copied beside, renamed when complete
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(
        folder, staging, ignore=shutil.ignore_patterns(".*", *(f"*{s}" for s in IGNORED_SUFFIXES))
    )
    staging.rename(source / name)
    return name


def add_delta(
    root: Path | str, folder: Path | str | None, removed: set[str], name: str | None = None
) -> tuple[str, DeltaSummary]:
    """Build the next version from the newest one, the added or changed documents and questions in
    `folder` (`docs/`, `qa.jsonl`, either optional) and the document ids in `removed`."""
    source, found, _ = versioned_source(root)
    name = _next_name(source, [v for v, _ in found], name)
    staging = source / f".{name}.incoming"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        summary = build_snapshot(found[-1][1], Path(folder) if folder else None, removed, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.rename(source / name)
    return name, summary


@flow(name="knowledge-update", log_prints=True)
def knowledge_update(
    root: str = ".",
    corpus: str | None = None,
    version: str | None = None,
    delta: str | None = None,
    remove: list[str] | None = None,
) -> dict:
    """Add the next corpus version and run every stage, holding the workspace's run lock (a
    second run waits for this one): `update_knowledge`."""
    with workspace_lock(root, say=get_run_logger().warning):
        return update_knowledge(root, corpus, version, delta, remove)


def update_knowledge(
    root: str = ".",
    corpus: str | None = None,
    version: str | None = None,
    delta: str | None = None,
    remove: list[str] | None = None,
) -> dict:
    """Add `corpus` (a full snapshot) as the next version when its content is new, or build the
    next version from `delta` (added or changed documents and questions) and `remove` (document
    ids), then run every stage.

    Stages whose inputs did not change are skipped by DVC, so an unchanged corpus costs seconds.
    """
    logger = get_run_logger()

    def resolve(folder: str) -> Path:
        return Path(folder) if Path(folder).is_absolute() else Path(root) / folder

    if delta or remove:
        added, summary = add_delta(root, resolve(delta) if delta else None, set(remove or []), version)
        logger.info("built corpus version %s from the delta: %s", added, summary.as_dict())
    elif corpus:
        folder = resolve(corpus)
        added = add_version(root, folder, version)
        if added is None:
            logger.info("%s holds the newest corpus version's content: nothing to add", folder)
        else:
            logger.info("added %s as corpus version %s", folder, added)
    return retro_pipeline(root=root)
