"""Artifact folders are replaced whole (components/core/artifacts.py `staged_swap`, used by
adapter-train, continual-update, the index and the chain's restore): a write that fails leaves the
previous folder as it was, and a swap killed between its two renames is finished by the next one."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.core.artifacts import staged_swap


def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_model.safetensors").write_text(text)
    return path


def test_a_failed_write_leaves_the_previous_folder_whole(tmp_path: Path) -> None:
    target = _folder(tmp_path / "adapter", "old weights")
    with pytest.raises(RuntimeError), staged_swap(target) as staging:
        _folder(staging, "half of the new")
        raise RuntimeError("killed while saving")
    assert (target / "adapter_model.safetensors").read_text() == "old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # nothing half-written left
    with staged_swap(target) as staging:
        _folder(staging, "new weights")
    assert (target / "adapter_model.safetensors").read_text() == "new weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_a_swap_killed_between_its_renames_is_recovered(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    _folder(tmp_path / "adapter.old", "old weights")  # the first rename happened, the second did not
    _folder(tmp_path / "adapter.tmp", "new weights, maybe incomplete")
    with pytest.raises(RuntimeError), staged_swap(target):
        raise RuntimeError("this run fails too")
    assert (target / "adapter_model.safetensors").read_text() == "old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
