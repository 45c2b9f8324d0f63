"""Artifact folders are replaced whole (components/core/artifacts.py `staged_swap`, used by
adapter-train, continual-update, the index and the chain's restore): a write that fails leaves the
previous folder as it was, and a swap killed between its two renames (SIGKILL,
components/core/drills.py) is finished by the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from components.core.artifacts import staged_swap
from components.core.drills import KILL_ENV, STAGE_ENV
from tests.conftest import ROOT


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


def test_a_real_kill_between_the_renames_leaves_the_old_folder_for_the_next_swap(tmp_path: Path) -> None:
    target = _folder(tmp_path / "adapter", "old weights")
    script = (
        "import sys; from pathlib import Path; from components.core.artifacts import staged_swap\n"
        "with staged_swap(Path(sys.argv[1])) as staging:\n"
        "    staging.mkdir(); (staging / 'adapter_model.safetensors').write_text('new weights')\n"
    )
    env = {**os.environ, KILL_ENV: "adapter-train:swap", STAGE_ENV: "adapter-train", "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", script, str(target)], env=env, check=False)
    assert killed.returncode == -signal.SIGKILL
    assert not target.exists() and (tmp_path / "adapter.old").is_dir()  # killed mid-swap, for real
    with pytest.raises(RuntimeError), staged_swap(target):
        raise RuntimeError("the next run fails before writing")
    assert (target / "adapter_model.safetensors").read_text() == "old weights"
