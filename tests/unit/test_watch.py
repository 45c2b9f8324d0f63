"""The watcher's rules without a server: content hashing, debouncing, announcing once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flows.watch import Debouncer, Watcher, folder_content_hash


def _folder(tmp_path: Path) -> Path:
    docs = tmp_path / "incoming" / "docs"
    docs.mkdir(parents=True)
    (docs / "a.md").write_text("# A\n\nThe Zorvex relay.\n")
    return docs.parent


def test_content_hash_follows_content_not_timestamps_or_partial_files(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    digest, files = folder_content_hash(folder)
    assert files == 1
    os.utime(folder / "docs" / "a.md", (1, 1))
    (folder / "docs" / "b.md.part").write_text("half a download")
    (folder / "docs" / ".hidden").write_text("x")
    assert folder_content_hash(folder) == (digest, 1)
    (folder / "docs" / "a.md").write_text("# A\n\nThe Zorvex relay, revised.\n")
    assert folder_content_hash(folder)[0] != digest
    (folder / "docs" / "a.md").rename(folder / "docs" / "c.md")  # a rename is a change
    assert folder_content_hash(folder)[0] not in (digest,)


def test_debouncer_waits_for_quiet_and_fires_once() -> None:
    debouncer = Debouncer(2.0, pending=False)
    assert not debouncer.due(10.0)
    for t in (0.0, 0.5, 1.0, 1.5, 3.0):  # a burst with short gaps
        debouncer.notify(t)
        assert not debouncer.due(t + 1.9)
    assert debouncer.due(5.0) and not debouncer.due(9.0)
    assert Debouncer(1.0, pending=True, now=0.0).due(1.0)  # a change made while the watcher was down


def test_watcher_announces_each_new_content_once_and_survives_restarts(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    state = tmp_path / "state" / "watch.json"
    sent: list[dict] = []
    watcher = Watcher(folder, state, sent.append)
    first = watcher.check()
    assert first == {
        "folder": str(folder.resolve()),
        "content_hash": folder_content_hash(folder)[0],
        "files": 1,
    }
    assert watcher.check() is None and len(sent) == 1
    assert json.loads(state.read_text())["content_hash"] == first["content_hash"]
    restarted = Watcher(folder, state, sent.append)
    assert restarted.check() is None
    (folder / "docs" / "b.md").write_text("# B\n\nNew.\n")
    assert restarted.check()["files"] == 2 and len(sent) == 2


def test_baseline_and_undelivered_events(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    state = tmp_path / "watch.json"
    sent: list[dict] = []
    assert Watcher(folder, state, sent.append, baseline=folder_content_hash(folder)[0]).check() is None

    def unreachable(payload: dict) -> None:
        raise ConnectionError("Prefect API unreachable")

    (folder / "docs" / "b.md").write_text("# B\n\nNew.\n")
    with pytest.raises(ConnectionError):
        Watcher(folder, state, unreachable).check()
    assert not state.exists()  # not recorded, so the change is announced once the API is back
    assert Watcher(folder, state, sent.append).check() is not None and len(sent) == 1
