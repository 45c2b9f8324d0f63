"""Reading and writing stage outputs: atomic JSON, parquet tables with a schema version.

Outputs whose shape later versions of Retro-PEFT may change carry a schema version. A reader
that finds another version refuses with a message saying what to rebuild, never misreads it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from components.core.drills import kill_point

SCHEMA_KEY = "retro_schema"


class SchemaMismatch(RuntimeError):
    """An output was written by another version of Retro-PEFT; the message says how to rebuild."""


def check_schema(found: Any, expected: int, what: str, rebuild: str) -> None:
    """Raise SchemaMismatch unless `found` (None: no version recorded) equals `expected`."""
    if found is None or int(found) != expected:
        written = "no schema version (an older Retro-PEFT)" if found is None else f"schema {found}"
        raise SchemaMismatch(f"{what} has {written}, this version reads schema {expected}: {rebuild}")


@contextmanager
def staged_swap(target: Path) -> Iterator[Path]:
    """A staging folder beside `target` that replaces it when the block succeeds (two renames,
    so a reader sees one or the other); on an error it is removed and `target` is untouched. A
    swap killed between its two renames is finished by the next call (the old folder comes back)."""
    staging = target.with_name(target.name + ".tmp")
    retired = target.with_name(target.name + ".old")
    if not target.exists() and retired.exists():  # killed between the renames: restore it first
        retired.rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists():
        target.rename(retired)
    kill_point("swap")
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a crash never leaves half a metrics file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
    kill_point("write")


def write_jsonl(path: Path, records: Iterable[Any]) -> None:
    """Write JSON lines (one object a line) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as fh:
        for record in records:
            fh.write(json.dumps(record, default=str) + "\n")
    tmp.replace(path)
    kill_point("write")


def write_table(df: pd.DataFrame, path: Path, schema: int | None = None) -> None:
    """Write a parquet table atomically, with its schema version in the file's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    if schema is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), SCHEMA_KEY: str(schema)})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    kill_point("write")


def read_table(path: Path, stage: str, schema: int | None = None) -> pd.DataFrame:
    """A table written by `stage`; with `schema`, one written with that schema version."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the {stage} stage first")
    if schema is not None:
        import pyarrow.parquet as pq

        found = (pq.read_schema(path).metadata or {}).get(SCHEMA_KEY.encode())
        check_schema(
            found.decode() if found else None, schema, str(path), f"rebuild it with `dvc repro -f {stage}`"
        )
    return pd.read_parquet(path)


def versions_in(qa_or_docs: pd.DataFrame) -> list[str]:
    """Corpus versions present, oldest first (v2 before v10)."""
    return sorted(set(qa_or_docs["version"]), key=lambda v: (len(v), v))
