"""Watch the incoming document folder and announce each settled change as one Prefect event.

The folder holds the next state of the knowledge (`docs/**`, optionally `qa.jsonl`, the data
contract). File-system notifications (watchfiles) only wake the watcher; whether something
changed is decided by the folder's content hash, so touching or re-saving a file unchanged
announces nothing. A burst of changes (a copy of 100 files) is one announcement: the event goes
out once the folder has been quiet for `debounce_seconds`. The hash last announced is kept in
`state_file`, so a restart neither repeats nor misses a change; with no state yet, the newest
corpus version is the baseline.

The `knowledge-update/on-change` deployment (prefect.yaml) is triggered by the event and gets
the folder as its `corpus` parameter.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.core.config import load_params_file, parse_section
from components.core.params import WatchParams
from components.data.corpus import list_versions

EVENT = "retro.corpus.changed"
RESOURCE_PREFIX = "retro.corpus."
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")

logger = logging.getLogger("retro.watch")


def _counted(path: Path, folder: Path) -> bool:
    """Files that make up the folder's content: hidden files and partial downloads are not."""
    parts = path.relative_to(folder).parts
    return (
        path.is_file()
        and not any(p.startswith(".") for p in parts)
        and not path.name.endswith(IGNORED_SUFFIXES)
    )


def folder_content_hash(folder: Path | str) -> tuple[str, int]:
    """(sha256 over every counted file's relative path and bytes, number of files)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if _counted(p, folder)) if folder.is_dir() else []
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest(), len(files)


def latest_version_hash(corpus_source: Path) -> str | None:
    """The content hash of the newest version of the project's corpus, if there is one."""
    try:
        versions = list_versions(corpus_source)
    except FileNotFoundError:
        return None
    return folder_content_hash(versions[-1][1])[0]


def resource_id(folder: Path) -> str:
    """Prefect event resource id of a watched folder."""
    return RESOURCE_PREFIX + folder.resolve().as_posix().strip("/").replace("/", ".")


class Debouncer:
    """Turns a stream of 'something changed' notifications into one announcement per settled change.

    `notify(now)` records a change; `due(now)` is true once the folder has been quiet for
    `debounce_seconds` after the last change. Time is passed in so the rule is testable.
    """

    def __init__(self, debounce_seconds: float, pending: bool = True, now: float = 0.0) -> None:
        self.debounce_seconds = debounce_seconds
        self.last_change: float | None = now if pending else None

    def notify(self, now: float) -> None:
        """Record a change seen at `now`."""
        self.last_change = now

    def due(self, now: float) -> bool:
        """Whether the folder has been quiet long enough to announce the change (once)."""
        if self.last_change is None or now - self.last_change < self.debounce_seconds:
            return False
        self.last_change = None
        return True


class Watcher:
    """Announces the folder's content whenever it settles on a hash not announced before."""

    def __init__(
        self,
        folder: Path,
        state_file: Path,
        emit: Callable[[dict[str, Any]], None],
        baseline: str | None = None,
    ) -> None:
        self.folder, self.state_file, self.emit = Path(folder), Path(state_file), emit
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        self.announced: str | None = state.get("content_hash", baseline)

    def check(self) -> dict[str, Any] | None:
        """Hash the folder; announce it (emit, then persist) when it differs from the last one."""
        if not (self.folder / "docs").is_dir():
            return None
        digest, files = folder_content_hash(self.folder)
        if digest == self.announced:
            return None
        payload = {"folder": str(self.folder.resolve()), "content_hash": digest, "files": files}
        self.emit(payload)  # raises when the event could not be delivered: nothing is recorded then
        self.announced = digest
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"content_hash": digest, "files": files, "announced_at": time.time()}))
        tmp.replace(self.state_file)
        return payload


def prefect_emitter(folder: Path) -> Callable[[dict[str, Any]], None]:
    """Send `retro.corpus.changed` to the Prefect API synchronously; raise when it can't be sent."""
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    if not api_url:
        raise RuntimeError("PREFECT_API_URL is not set: the watcher announces changes to a Prefect server")

    def emit(payload: dict[str, Any]) -> None:
        event = Event(
            event=EVENT,
            resource={"prefect.resource.id": resource_id(folder), "prefect.resource.name": folder.name},
            payload=payload,
        )

        async def send() -> None:
            async with PrefectEventsClient(api_url=api_url) as client:
                await client.emit(event)

        asyncio.run(send())
        logger.info("announced %s (%d files, %s)", folder, payload["files"], payload["content_hash"][:12])

    return emit


def watcher_from_params(
    params_file: Path | str = "params.yaml", root: Path | str = "."
) -> tuple[Watcher, WatchParams]:
    """A watcher for `watch.folder`, with the newest corpus version as the baseline."""
    root = Path(root)
    params = load_params_file(root / params_file)
    p = parse_section(WatchParams, params, "watch")
    folder = Path(p.folder) if Path(p.folder).is_absolute() else root / p.folder
    source = Path((params.get("ingest") or {}).get("source", "data/raw/sample"))
    source = source if source.is_absolute() else root / source
    state = Path(p.state_file) if Path(p.state_file).is_absolute() else root / p.state_file
    return Watcher(folder, state, prefect_emitter(folder), baseline=latest_version_hash(source)), p


def watch_forever(watcher: Watcher, p: WatchParams, stop: Callable[[], bool] = lambda: False) -> None:
    """Wake on file-system changes; announce once the folder has been quiet for the debounce time."""
    import threading

    import watchfiles

    watcher.folder.mkdir(parents=True, exist_ok=True)
    debouncer = Debouncer(p.debounce_seconds, pending=True, now=time.monotonic())
    stop_event = threading.Event()
    for changes in watchfiles.watch(
        watcher.folder,
        debounce=int(p.tick_seconds * 1000),
        rust_timeout=int(p.tick_seconds * 1000),
        yield_on_timeout=True,
        force_polling=p.force_polling or None,
        stop_event=stop_event,
        raise_interrupt=False,
    ):
        now = time.monotonic()
        if changes:
            debouncer.notify(now)
        if debouncer.due(now):
            try:
                watcher.check()
            except Exception as exc:  # noqa: BLE001 - keep watching; the change is announced next time
                logger.error(
                    "could not announce the change (%s); retrying in %.0f s", exc, p.debounce_seconds
                )
                debouncer.notify(now)
        if stop():
            stop_event.set()
            break
