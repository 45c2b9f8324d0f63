"""The documentation site's generated parts (docs/hooks.py, docs/params_reference.py) and the
docstring rule the API reference depends on."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _load(name: str):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_function_class_and_module_has_a_docstring() -> None:
    result = subprocess.run(
        [str(BIN / "ruff"), "check", "--select", "D100,D101,D102,D103,D104", "components", "flows"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]


def test_the_docstring_rule_catches_a_missing_docstring(tmp_path: Path) -> None:
    module = tmp_path / "undocumented.py"
    module.write_text('"""A module."""\n\n\ndef public(x: int) -> int:\n    return x\n')
    result = subprocess.run(
        [str(BIN / "ruff"), "check", "--isolated", "--select", "D103", str(module)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "D103" in result.stdout


def test_every_public_module_gets_an_api_page() -> None:
    modules = _load("hooks").public_modules()
    assert "components.adapters.precision" in modules and "flows.pipeline" in modules
    assert "components.stages" in modules  # a package page from its __init__
    assert not any(part.startswith("_") for m in modules for part in m.split("."))
    on_disk = {p for p in (ROOT / "components").rglob("*.py") if not p.name.startswith("_")}
    assert {
        f"components.{'.'.join(p.relative_to(ROOT / 'components').with_suffix('').parts)}" for p in on_disk
    } <= set(modules)


def test_the_params_reference_lists_every_key_with_its_comment() -> None:
    from components.core.params import PipelineParams

    reference = _load("params_reference")
    page = reference.params_reference_markdown(ROOT)
    rows = reference.field_rows(PipelineParams, "", {})
    keys = {row["key"] for row in rows if "." in row["key"]}  # the sections are the page's headings
    assert {
        "model.dtype",
        "adapter-train.fusion.fusion",
        "serve.torch.device",
        "paths.evaluation_plots",
    } <= keys
    for key in keys:
        assert f"| `{key}` |" in page, key
    # the text of a key comes from params.yaml's comment when the model has no description
    assert "| `retrieval.k` | int | `3` | ≥ 1, ≤ 50 | passages per question" in page
    comments = reference.yaml_comments("a:\n  b: 1   # first\n                # second\n  c: 2\n")
    assert comments == {"a.b": "first second"}
