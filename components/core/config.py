"""Reading params.yaml into typed params, with errors that name the bad key.

Every params model derives from `StrictModel`: unknown keys are errors that suggest the closest
valid key, and the keys a process reads are recorded in `PARAMS_READ` (the dependency check
compares them with what `dvc.yaml` declares for the stage).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

P = TypeVar("P", bound=BaseModel)

DEFAULT_PARAMS_FILE = Path("params.yaml")

PARAMS_READ: set[str] = set()
"""Dotted params keys read in this process through a model loaded by `parse_section` or
`parse_params` (an attribute read, or a dump of the whole model)."""


class ParamsError(ValueError):
    """A params.yaml value is missing or invalid; the message names the key."""


def yaml_off(value: Any) -> Any:
    """YAML 1.1 (PyYAML) reads a bare `off` as False and `on` as True: the option values "off"
    and "on" were meant."""
    return "off" if value is False else "on" if value is True else value


class StrictModel(BaseModel):
    """Base for params models: unknown keys are errors, not silently ignored; reads are recorded."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    _trace_prefix: str | None = PrivateAttr(None)

    def traced(self, prefix: str) -> StrictModel:
        """Record reads of this model's fields as `prefix.field` from now on."""
        self._trace_prefix = prefix
        return self

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name[0] != "_" and name in type(self).model_fields:
            prefix = (super().__getattribute__("__pydantic_private__") or {}).get("_trace_prefix")
            if prefix is not None:
                key = f"{prefix}.{_field_key(type(self), name)}" if prefix else _field_key(type(self), name)
                if isinstance(value, StrictModel):
                    value.traced(key)
                else:
                    PARAMS_READ.add(key)
        return value

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        """Dump the fields, recording the keys read for the dependency check."""
        prefix = (self.__pydantic_private__ or {}).get("_trace_prefix")
        if prefix:
            PARAMS_READ.update(f"{prefix}.{_field_key(type(self), f)}" for f in type(self).model_fields)
        return super().model_dump(**kwargs)


def _field_key(model: type[BaseModel], name: str) -> str:
    """The key of a field as params.yaml spells it (its alias, e.g. `adapter-train`)."""
    return model.model_fields[name].alias or name


def _valid_keys(model: type[BaseModel]) -> list[str]:
    return [_field_key(model, name) for name in model.model_fields]


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The nested params model that holds the key at `loc` (None when it is not a model)."""
    for part in loc:
        field = {_field_key(model, n): f for n, f in model.model_fields.items()}.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def closest_key(wrong: str, valid: list[str]) -> str | None:
    """The valid key most like `wrong` (a typo, `_` for `-`), or None when none is close."""
    normalised = {key.replace("-", "_").lower(): key for key in valid}
    found = difflib.get_close_matches(wrong.replace("-", "_").lower(), list(normalised), n=1, cutoff=0.6)
    return normalised[found[0]] if found else None


def _describe(model: type[BaseModel], section: str | None, err: dict[str, Any]) -> str:
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(p for p in (section, *loc) if p)
    if err["type"] == "extra_forbidden":
        holder = _model_at(model, loc[:-1])
        valid = _valid_keys(holder) if holder is not None else []
        hint = closest_key(loc[-1], valid)
        where = "section" if not section and len(loc) == 1 else "key"
        suggestion = f"; did you mean {'.'.join(p for p in (section, *loc[:-1], hint) if p)}?" if hint else ""
        return f"{key}: unknown {where}{suggestion} (valid: {', '.join(valid)})"
    return f"{key}: {err['msg']} (got {err.get('input')!r})"


def validate(model: type[P], raw: dict[str, Any], section: str | None = None) -> P:
    """Validate `raw` against `model`; every problem names its dotted key."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(model, section, err) for err in exc.errors()]
        raise ParamsError("invalid params:\n  " + "\n  ".join(problems)) from None


def parse_section(model: type[P], data: dict[str, Any], section: str) -> P:
    """Validate one section of params against its model; errors name `section.key`."""
    parsed = validate(model, data.get(section, {}) or {}, section)
    if isinstance(parsed, StrictModel):
        parsed.traced(section)
    return parsed


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; a syntax error names the file, line and column (no traceback)."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ParamsError(f"{where}: YAML syntax error: {exc.problem or exc.context}") from None


def load_params_file(path: Path | str = DEFAULT_PARAMS_FILE) -> dict[str, Any]:
    """Load the whole params.yaml as a plain dict."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params file not found: {path}")
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path} must hold a mapping of sections")
    return data


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
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        raise ParamsError(f"override {text!r}: the value is not valid YAML") from None
    return key.strip(), value


def apply_overrides(
    path: Path | str, overrides: list[str], check: Callable[[dict[str, Any]], Any] | None = None
) -> dict[str, Any]:
    """Write `section.key=value` overrides into params.yaml, keeping its comments.

    The result is validated first (by `check(data)`, which raises ParamsError), and the file is
    replaced in one rename only when it is valid: a bad value leaves params.yaml byte-identical.
    """
    from ruamel.yaml import YAML

    path = Path(path)
    rt = YAML()
    rt.preserve_quotes = True
    data = rt.load(path.read_text()) if path.exists() else {}
    plain = copy.deepcopy(load_params_file(path)) if path.exists() else {}
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(data, key, value)
        set_dotted(plain, key, value)
    if check is not None:
        check(plain)
    staging = path.with_name(f".{path.name}.tmp")
    with staging.open("w") as fh:
        rt.dump(data, fh)
    staging.replace(path)
    return load_params_file(path)
