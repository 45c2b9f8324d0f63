"""One corpus lineage per registered model: which names a corpus registers under, and the check
that a name holding another corpus is never reused (a candidate is never gated against a foreign
champion).

`register.model_name: auto` is `retro` for the bundled sample and `retro-<corpus folder name>`
for any other corpus. The registered models are tagged with the corpus they hold.
"""

from __future__ import annotations

import re
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components.core.params import RegisterParams
from components.registry.mlflow_registry import DEFAULT_NAME, ModelNames

SAMPLE_CORPUS = "data/raw/sample"  # what `make demo` generates and ingests
CORPUS_TAG = "corpus"


class LineageConflict(ValueError):
    """A registered model name already holds another corpus (or the registry cannot be asked)."""


def corpus_identity(source: str | Path, root: Path | str = ".") -> str:
    """The corpus a source folder is: its path relative to the project root, else absolute."""
    path = (Path(root) / source).resolve()
    try:
        return path.relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def registry_name(setting: str, source: str | Path, root: Path | str = ".") -> ModelNames:
    """The registered model names for `register.model_name` (`auto` or a fixed name)."""
    if setting != "auto":
        return ModelNames(setting)
    corpus = corpus_identity(source, root)
    if corpus == SAMPLE_CORPUS:
        return ModelNames(DEFAULT_NAME)
    folder = re.sub(r"[^a-z0-9]+", "-", Path(corpus).name.lower()).strip("-") or "corpus"
    return ModelNames(f"{DEFAULT_NAME}-{folder}")


def held_corpus(client: MlflowClient, names: ModelNames) -> str | None:
    """The corpus the adapter model already holds (None: not registered yet, or untagged)."""
    try:
        model = client.get_registered_model(names.adapter)
    except MlflowException:
        return None
    return (model.tags or {}).get(CORPUS_TAG)


def check_lineage(client: MlflowClient, names: ModelNames, corpus: str) -> None:
    """LineageConflict when `names` already holds a corpus other than `corpus`."""
    held = held_corpus(client, names)
    if held is not None and held != corpus:
        raise LineageConflict(
            f"registered model {names.adapter!r} holds corpus {held!r}, not {corpus!r}: a candidate "
            f"would be gated against another corpus's champion. Set register.model_name to a new "
            f"name (or to auto, which gives {registry_name('auto', corpus).name!r})"
        )


def tag_lineage(client: MlflowClient, names: ModelNames, corpus: str) -> None:
    """Record the corpus on both registered models (they exist already)."""
    for model in (names.adapter, names.index):
        client.set_registered_model_tag(model, CORPUS_TAG, corpus)


def check_project_lineage(registration: RegisterParams, source: str, root: Path | str = ".") -> ModelNames:
    """The project's registered model names, after checking they hold no other corpus (run before
    any training: a pipeline pointed at a name of another corpus stops here, not at register)."""
    from components.registry.mlflow_registry import configure

    names = registry_name(registration.model_name, source, root)
    try:
        client = configure(registration.tracking_uri)
        check_lineage(client, names, corpus_identity(source, root))
    except (MlflowException, OSError) as exc:
        raise LineageConflict(
            f"cannot check register.model_name {names.name!r} in the MLflow registry at "
            f"{registration.tracking_uri} (register.tracking_uri): {exc}"
        ) from None
    return names


def project_model_name(params: dict, root: Path | str = ".") -> str:
    """The registered model name of the corpus a raw params.yaml mapping points at (what
    `retro serve`, `retro ask` and `retro lineage` use without --model)."""
    setting = (params.get("register") or {}).get("model_name", "auto")
    source = (params.get("ingest") or {}).get("source", SAMPLE_CORPUS)
    return registry_name(setting, source, root).name
