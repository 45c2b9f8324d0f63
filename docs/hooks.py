"""MkDocs hooks: the pages generated from the code at build time, so they cannot drift from it.

- `reference/api/<module>.md`: one page a public module of `components/` and `flows/`, rendered
  by mkdocstrings from the docstrings (ruff's D1 rules make sure every public object has one);
- `reference/params.md`: every `params.yaml` key, from the pydantic params models, with the
  comment `params.yaml` gives it;
- `benchmarks.md`: BENCHMARKS.md as it is, and the continual benchmark's plots under `img/`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("components", "flows")
API_INDEX = "reference/api/index.md"
# the plots of the 50-task continual protocol (benchmarks/continual.py), shown in the docs
PLOT_FOLDERS = ("benchmarks/results/continual-syn50", "benchmarks/results/continual-pubmedqa50")

if str(ROOT) not in sys.path:  # the params models are imported from the project
    sys.path.insert(0, str(ROOT))


def public_modules() -> list[str]:
    """Dotted names of the public modules of the library and the flows, sorted."""
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if any(p.startswith("_") and p != "__init__" for p in parts):
                continue
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(set(names))


def _api_page(module: str) -> str:
    return f"::: {module}\n"


def _api_index(modules: list[str]) -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings of every public module. `components/` is the library",
        "(it never imports `flows/` or the command line); `flows/` holds the Prefect flows.",
        "",
    ]
    package = None
    for module in modules:
        top = ".".join(module.split(".")[:2])
        if top != package:
            package = top
            lines += ["", f"## `{top}`", ""]
        lines.append(f"- [`{module}`]({module}.md)")
    return "\n".join(lines) + "\n"


def _params_reference() -> str:
    spec = importlib.util.spec_from_file_location("params_reference", ROOT / "docs" / "params_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.params_reference_markdown(ROOT)


def on_config(config: Any) -> Any:
    """Put every generated API page in the navigation, grouped by package."""
    modules = public_modules()
    groups: dict[str, list[dict[str, str]]] = {}
    for module in modules:
        top = ".".join(module.split(".")[:2])
        groups.setdefault(top, []).append({module: f"reference/api/{module}.md"})
    api_nav = [API_INDEX, *({top: pages} for top, pages in groups.items())]
    for section in config["nav"]:
        if isinstance(section, dict) and "Reference" in section:
            section["Reference"] = [
                {"API": api_nav} if isinstance(item, dict) and "API" in item else item
                for item in section["Reference"]
            ]
    return config


def on_files(files: Files, config: Any) -> Files:
    """Add the generated pages and the benchmark plots."""
    modules = public_modules()
    for module in modules:
        files.append(File.generated(config, f"reference/api/{module}.md", content=_api_page(module)))
    files.append(File.generated(config, API_INDEX, content=_api_index(modules)))
    files.append(File.generated(config, "reference/params.md", content=_params_reference()))
    files.append(File.generated(config, "benchmarks.md", content=(ROOT / "BENCHMARKS.md").read_text()))
    for folder in PLOT_FOLDERS:
        for png in sorted((ROOT / folder).glob("*.png")):
            uri = f"img/{Path(folder).name}/{png.name}"
            files.append(File.generated(config, uri, content=png.read_bytes()))
    return files
