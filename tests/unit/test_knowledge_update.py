"""Adding a corpus version for the knowledge-update flow: names, refusals, nothing overwritten."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from flows.knowledge_update import add_version


def _project(tmp_path: Path, versions: list[str]) -> Path:
    for v in versions:
        (tmp_path / "kb" / v / "docs").mkdir(parents=True)
        (tmp_path / "kb" / v / "docs" / "a.md").write_text(f"# A\n\nVersion {v}.\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": {"source": "kb"}}))
    incoming = tmp_path / "incoming"
    (incoming / "docs").mkdir(parents=True, exist_ok=True)
    (incoming / "docs" / "a.md").write_text("# A\n\nNew text.\n")
    return incoming


def test_next_version_is_named_after_the_last_one(tmp_path: Path) -> None:
    incoming = _project(tmp_path, ["v1", "v2"])
    assert add_version(tmp_path, incoming) == "v3"
    assert (tmp_path / "kb" / "v3" / "docs" / "a.md").read_text() == "# A\n\nNew text.\n"
    shutil.rmtree(tmp_path / "kb")
    incoming = _project(tmp_path, ["t001", "t009"])
    assert add_version(tmp_path, incoming) == "t010"


def test_refusals_name_the_problem_and_change_nothing(tmp_path: Path) -> None:
    incoming = _project(tmp_path, ["v1", "v2"])
    with pytest.raises(ValueError, match="'v2' must look like v3 or t004 and not exist"):
        add_version(tmp_path, incoming, "v2")
    with pytest.raises(FileNotFoundError, match="no docs/ folder"):
        add_version(tmp_path, tmp_path / "kb")
    assert sorted(p.name for p in (tmp_path / "kb").iterdir()) == ["v1", "v2"]


def test_a_flat_corpus_becomes_v1_before_the_snapshot_goes_beside_it(tmp_path: Path) -> None:
    incoming = _project(tmp_path, [])
    flat = tmp_path / "flat"
    (flat / "docs").mkdir(parents=True)
    (flat / "docs" / "a.md").write_text("# A\n\nOld text.\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": {"source": "flat"}}))
    assert add_version(tmp_path, incoming) == "v2"
    assert sorted(p.name for p in flat.iterdir()) == ["v1", "v2"]
    assert (flat / "v1" / "docs" / "a.md").read_text() == "# A\n\nOld text.\n"
    assert (flat / "v2" / "docs" / "a.md").read_text() == "# A\n\nNew text.\n"


def test_the_newest_content_again_adds_nothing(tmp_path: Path) -> None:
    incoming = _project(tmp_path, ["v1"])
    assert add_version(tmp_path, incoming) == "v2"
    (incoming / "docs" / ".a.md.swp").write_text("editor state")  # hidden files are not content
    assert add_version(tmp_path, incoming) is None
    assert sorted(p.name for p in (tmp_path / "kb").iterdir()) == ["v1", "v2"]
    (incoming / "docs" / "b.md").write_text("# B\n\nAnother document.\n")
    assert add_version(tmp_path, incoming) == "v3"
    assert not (tmp_path / "kb" / "v3" / "docs" / ".a.md.swp").exists()
