"""What each DVC stage really reads, observed during a `dvc repro`, against what dvc.yaml declares.

- Files: `strace` follows `dvc repro` and every process it starts; the stage is the Python process
  that runs a `dvc.yaml` cmd (known by the record it writes at exit, named by its pid), with its
  threads and forks (not the programs they execute, such as git). Calls that strace prints in two
  pieces, because another process's call came between, are joined back first. Every file or
  folder it opens for reading under the project root counts, the project's own modules among them
  (a cached `__pycache__/x.pyc` counts as `x.py`).
- Params: the keys read through the params models (`PARAMS_READ`), written at exit by
  `tests/fixtures/trace/sitecustomize.py`.
- Declared: the deps, outs and params of each stage as DVC resolved them into dvc.lock.

Not counted, with the reason: the virtualenv and Python's own files; `.git` and `.dvc` (DVC's
workspace); params.yaml itself (its keys are checked one by one); `dvc.lock` (register records
the lock's hashes as lineage; a stage cannot depend on the lock DVC writes after it); the MLflow
store under `mlruns/` (the registry is a service, not a pipeline input); `paths.*` keys (dvc.yaml
interpolates them, so a change of layout changes the stage definition itself); the `.tmp`,
`.staging` and `.old` folders a stage makes beside its own output while replacing it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

IGNORED_TOP = {".venv", ".git", ".dvc", "mlruns", ".prefect", ".pytest_cache", ".ruff_cache"}
IGNORED_FILES = {"params.yaml", "dvc.yaml", "dvc.lock", ".dvcignore"}
ALWAYS_DECLARED_PARAMS = ("paths",)
SCRATCH_SUFFIXES = (".tmp", ".staging", ".old")

LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+|\?)")
UNFINISHED = re.compile(r"^(\d+)\s+(.*?)\s*<unfinished \.\.\.>$")
RESUMED = re.compile(r"^(\d+)\s+<\.\.\. \w+ resumed>\s?(.*)$")
OPEN = re.compile(r'^(?:AT_FDCWD, )?"((?:[^"\\]|\\.)*)", ([A-Z_|]+)')


@dataclass
class Reads:
    files: set[str] = field(default_factory=set)
    params: set[str] = field(default_factory=set)


def strace_command(trace_file: Path) -> list[str]:
    """The strace prefix that records opens, execs and process creation of a command tree."""
    return [
        "strace", "-f", "--seccomp-bpf", "-qq", "-s", "4096", "-o", str(trace_file),
        "-e", "trace=open,openat,execve,clone,clone3,fork,vfork",
    ]  # fmt: skip


def _stage_modules(dvc_yaml: Path) -> dict[str, str]:
    """{python module run by the stage's cmd: stage name}."""
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    modules = {}
    for name, entry in stages.items():
        words = shlex.split(entry["cmd"])
        if "-m" in words:
            modules[words[words.index("-m") + 1]] = name
    return modules


def _relative(path: str, root: Path) -> str | None:
    """`path` relative to the project root when it lies inside it and counts as a read."""
    folder = path.endswith("/")
    full = Path(os.path.normpath(path if os.path.isabs(path) else root / path))
    try:
        rel = full.relative_to(root)
    except ValueError:
        return None
    parts = rel.parts
    if not parts or parts[0] in IGNORED_TOP or str(rel) in IGNORED_FILES:
        return None
    if any(p.endswith(SCRATCH_SUFFIXES) for p in parts):  # a stage's staging copy of its own output
        return None
    if parts[-1] == "__pycache__":  # the import system listing a package's cache
        rel, folder = Path(*parts[:-1]), True
    elif "__pycache__" in parts:  # a cached module: the read of its source
        module = parts[-1].split(".")[0] + ".py"
        rel = Path(*parts[: parts.index("__pycache__")], module)
    return rel.as_posix() + ("/" if folder else "")


def _whole_calls(lines: list[str]) -> list[str]:
    """Trace lines with each call that strace split in two (`<unfinished ...>`, then
    `<... call resumed>` after other processes' calls) joined back into one line."""
    pending: dict[str, str] = {}
    whole = []
    for raw in lines:
        if m := UNFINISHED.match(raw):
            pending[m.group(1)] = raw[: m.start(2)] + m.group(2)
        elif (m := RESUMED.match(raw)) and m.group(1) in pending:
            whole.append(pending.pop(m.group(1)) + m.group(2))
        else:
            whole.append(raw)
    return whole


def _stage_records(params_dir: Path, modules: dict[str, str]) -> dict[int, tuple[str, set[str]]]:
    """{pid: (stage, params keys read)} from the records each stage process wrote at exit."""
    records = {}
    for path in params_dir.glob("*.params.json"):
        record = json.loads(path.read_text())
        argv0 = record["argv"][0] if record["argv"] else ""
        for module, stage in modules.items():
            if argv0.endswith(module.replace(".", "/") + ".py"):
                records[int(path.name.split(".")[0])] = (stage, set(record["params"]))
    return records


def observed_reads(trace_file: Path, params_dir: Path, root: Path, dvc_yaml: Path) -> dict[str, Reads]:
    """What each stage read during the traced run, by stage name."""
    root = root.resolve()
    modules = _stage_modules(dvc_yaml)
    children: dict[int, list[int]] = defaultdict(list)
    execs: set[int] = set()
    opens: dict[int, set[str]] = defaultdict(set)
    for raw in _whole_calls(trace_file.read_text(errors="replace").splitlines()):
        m = LINE.match(raw)
        if not m:
            continue
        pid, call, args, result = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        if call in ("clone", "clone3", "fork", "vfork") and result.isdigit():
            children[pid].append(int(result))
        elif call == "execve" and result == "0":
            execs.add(pid)
        elif call in ("open", "openat") and not result.startswith("-"):
            o = OPEN.match(args)
            if o and ("O_RDONLY" in o.group(2) or "O_RDWR" in o.group(2)):
                suffix = "/" if "O_DIRECTORY" in o.group(2) else ""  # a folder listed
                opens[pid].add(o.group(1).rstrip("/") + suffix)
    records = _stage_records(params_dir, modules)
    stage_of = {pid: stage for pid, (stage, _) in records.items()}
    reads: dict[str, Reads] = defaultdict(Reads)
    for stage, params in records.values():
        reads[stage].params |= params
    for pid, stage in stage_of.items():
        stack = [pid]
        while stack:  # the stage process, its threads and forks that run no other program
            current = stack.pop()
            reads[stage].files |= {r for p in opens[current] if (r := _relative(p, root))}
            stack += [c for c in children[current] if c not in execs]
    return dict(reads)


def declared(dvc_lock: Path) -> dict[str, tuple[set[str], set[str]]]:
    """{stage: (declared dep and out paths, declared params keys)} as DVC resolved them."""
    lock = yaml.safe_load(dvc_lock.read_text())["stages"]
    result = {}
    for stage, entry in lock.items():
        paths = {d["path"] for d in entry.get("deps", [])} | {o["path"] for o in entry.get("outs", [])}
        keys = {key for values in (entry.get("params") or {}).values() for key in values}
        result[stage] = (paths, keys)
    return result


def _covered_path(path: str, declared_paths: set[str]) -> bool:
    """Inside a declared path; a folder listed on the way to one (imports list their parents) too."""
    name = path.rstrip("/")
    if any(name == d.rstrip("/") or name.startswith(d.rstrip("/") + "/") for d in declared_paths):
        return True
    return path.endswith("/") and any(d.startswith(name + "/") for d in declared_paths)


def _covered_key(key: str, declared_keys: set[str]) -> bool:
    allowed = set(declared_keys) | set(ALWAYS_DECLARED_PARAMS)
    return any(key == d or key.startswith(d + ".") for d in allowed)


def undeclared(
    reads: dict[str, Reads], declarations: dict[str, tuple[set[str], set[str]]]
) -> dict[str, list[str]]:
    """{stage: every file or params key it read that its dvc.yaml entry does not declare}."""
    problems = {}
    for stage, seen in reads.items():
        paths, keys = declarations.get(stage, (set(), set()))
        missing = sorted(f"file {f.rstrip('/')}" for f in seen.files if not _covered_path(f, paths))
        missing += sorted(f"param {k}" for k in seen.params if not _covered_key(k, keys))
        if missing:
            problems[stage] = missing
    return problems
