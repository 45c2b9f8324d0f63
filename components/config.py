"""Reading params.yaml into typed stage params, with errors that name the bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

P = TypeVar("P", bound=BaseModel)

DEFAULT_PARAMS_FILE = Path("params.yaml")


class StrictModel(BaseModel):
    """Base for params models: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ParamsError(ValueError):
    """A params.yaml value is missing or invalid; the message names the key."""


def load_params_file(path: Path | str = DEFAULT_PARAMS_FILE) -> dict[str, Any]:
    """Load the whole params.yaml as a plain dict."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path} must hold a mapping of sections")
    return data


def parse_section(model: type[P], data: dict[str, Any], section: str) -> P:
    """Validate one section of params against its model; errors name `section.key`."""
    raw = data.get(section, {}) or {}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in (section, *err["loc"]))
            problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise ParamsError("invalid params:\n  " + "\n  ".join(problems)) from None


def set_dotted(data: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating sections as needed."""
    parts = dotted_key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ParamsError(f"cannot set {dotted_key}: {part} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `key.sub=value` (value read as YAML, like `dvc exp run -S`)."""
    if "=" not in text:
        raise ParamsError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    if not key or "." not in key:
        raise ParamsError(f"override {text!r} must name a section and a key (section.key=value)")
    return key.strip(), yaml.safe_load(raw) if raw != "" else ""


def apply_overrides(path: Path | str, overrides: list[str]) -> dict[str, Any]:
    """Write `section.key=value` overrides into params.yaml, keeping its comments."""
    from ruamel.yaml import YAML

    path = Path(path)
    rt = YAML()
    rt.preserve_quotes = True
    data = rt.load(path.read_text()) if path.exists() else {}
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(data, key, value)
    with path.open("w") as fh:
        rt.dump(data, fh)
    return load_params_file(path)
