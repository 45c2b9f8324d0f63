"""The params.yaml reference page, generated from the pydantic params models.

Every key the models accept is listed with its type, default and constraints. Its text is the
field's description and the comment `params.yaml` gives the key, so the page follows the code.
"""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

INTRO = """# params.yaml reference

Every option of every stage, generated from the params models (`components/core/params.py`,
`components/core/serve_params.py`) when the site is built, so it cannot drift from the code.
The text of a key is the model's description and the comment `params.yaml` gives it.
Change a value in `params.yaml`, or for one run with `retro pipeline -S section.key=value`.
An unknown key or a value out of range is refused before any stage runs, naming the key.
"""

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<rest>.*)$")


def yaml_comments(text: str) -> dict[str, str]:
    """The comment of each key of a params.yaml text, by dotted path (continuation lines joined)."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if last is not None and line.startswith(" ") and len(line) - len(line.lstrip()) > 2:
                comments[last] = (comments.get(last, "") + " " + stripped.lstrip("# ").strip()).strip()
            continue
        match = _KEY_LINE.match(line)
        if not match:
            last = None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        last = ".".join(k for _, k in stack)
        rest = match["rest"]
        if "#" in rest:
            comments[last] = rest.split("#", 1)[1].strip()
    return comments


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    value = info.default_factory() if info.default_factory is not None else info.default
    if isinstance(value, BaseModel):
        return "(section)"
    return json.dumps(value, default=str)


def _constraints(info: FieldInfo) -> str:
    names = {
        "ge": "≥",
        "gt": ">",
        "le": "≤",
        "lt": "<",
        "min_length": "min length",
        "max_length": "max length",
    }
    found = []
    for meta in info.metadata:
        for attr, sign in names.items():
            value = getattr(meta, attr, None)
            if value is not None:
                found.append(f"{sign} {value}")
    return ", ".join(found)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def field_rows(model: type[BaseModel], prefix: str, comments: dict[str, str]) -> list[dict[str, str]]:
    """One row a key of `model` (nested sections flattened), with its dotted path under `prefix`."""
    rows = []
    for name, info in model.model_fields.items():
        key = f"{prefix}.{info.alias or name}" if prefix else (info.alias or name)
        nested = _nested_model(info.annotation)
        text = " ".join(t for t in (info.description or "", comments.get(key, "")) if t)
        if nested is not None and _default(info) == "(section)":
            rows.append({"key": key, "type": "section", "default": "", "limits": "", "text": text})
            rows += field_rows(nested, key, comments)
            continue
        rows.append(
            {
                "key": key,
                "type": _type_name(info.annotation),
                "default": _default(info),
                "limits": _constraints(info),
                "text": text,
            }
        )
    return rows


def params_reference_markdown(root: Path) -> str:
    """The whole reference page: one table a params.yaml section."""
    from components.core.params import PipelineParams

    comments = yaml_comments((Path(root) / "params.yaml").read_text())
    parts = [INTRO]
    for name, info in PipelineParams.model_fields.items():
        section = info.alias or name
        model = _nested_model(info.annotation)
        assert model is not None, section
        parts += [f"\n## `{section}`\n", (model.__doc__ or "").strip().splitlines()[0], ""]
        parts += ["| key | type | default | limits | what it does |", "|---|---|---|---|---|"]
        for row in field_rows(model, section, comments):
            cells = [f"`{row['key']}`", row["type"], f"`{row['default']}`" if row["default"] else ""]
            cells += [row["limits"], row["text"]]
            parts.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(parts) + "\n"
