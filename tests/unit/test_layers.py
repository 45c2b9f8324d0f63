"""The layers hold: the import contract (import-linter, also run by `make lint`) and thin stages."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT

MAX_STAGE_LINES = 80


def stage_modules() -> dict[str, Path]:
    """{stage: the module file its dvc.yaml cmd runs}."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    found = {}
    for name, entry in stages.items():
        words = shlex.split(entry["cmd"])
        found[name] = ROOT / (words[words.index("-m") + 1].replace(".", "/") + ".py")
    return found


def test_import_contract_holds() -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "3 kept, 0 broken" in proc.stdout


def test_stage_modules_are_thin_and_independent() -> None:
    modules = stage_modules()
    assert len(modules) == 9
    for name, path in modules.items():
        lines = path.read_text().splitlines()
        assert len(lines) <= MAX_STAGE_LINES, f"{name}: {path.name} has {len(lines)} lines"
        others = {p.stem for p in modules.values()} - {path.stem}
        imports = [
            line for line in lines if line.startswith(("from components.stages", "import components.stages"))
        ]
        assert not [
            line for line in imports if any(f".{o} " in line or line.endswith(f".{o}") for o in others)
        ]
