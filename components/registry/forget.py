"""Documents taken out of a corpus lineage, as the registry records them.

The set of forgotten document ids is a tag of the registered `<name>-index` model, so every
service that follows the alias drops them from what it retrieves at its next poll, before a new
version is promoted. The versions that contained them are marked: index versions of a corpus
version holding the document (`forgotten`), adapter versions trained on one (`saw_forgotten`).
"""

from __future__ import annotations

import contextlib
import json

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components.registry.mlflow_registry import ModelNames

FORGOTTEN_TAG = "forgotten_documents"
RETRAINED_TAG = "retrained_without"
"""Forgotten documents the adapter was retrained without: versions that saw one are not parents."""
SAW_TAG = "saw_forgotten"


def _version_number(name: str) -> int:
    return int(name[1:]) if name[1:].isdigit() else 0


def _listed(client: MlflowClient, model: str, tag: str) -> frozenset[str]:
    try:
        tags = client.get_registered_model(model).tags or {}
    except MlflowException:
        return frozenset()  # not registered yet
    return frozenset(json.loads(tags.get(tag, "[]")))


def forgotten(client: MlflowClient, names: ModelNames) -> frozenset[str]:
    """The document ids forgotten in this lineage (empty when none, or not registered yet)."""
    return _listed(client, names.index, FORGOTTEN_TAG)


def retrained_without(client: MlflowClient, adapter_model: str) -> frozenset[str]:
    """The forgotten documents the adapter lineage was retrained without."""
    return _listed(client, adapter_model, RETRAINED_TAG)


def record_retrained(client: MlflowClient, names: ModelNames, doc_ids: set[str]) -> None:
    """Note that the adapter is retrained without `doc_ids`: from now on no version that saw one
    is restored as the parent of the continual chain."""
    ids = sorted(retrained_without(client, names.adapter) | doc_ids)
    with contextlib.suppress(MlflowException):  # nothing registered yet: no version can be a parent
        client.set_registered_model_tag(names.adapter, RETRAINED_TAG, json.dumps(ids))


def saw_any(version: object, doc_ids: frozenset[str]) -> bool:
    """Whether a registered adapter version was trained on one of `doc_ids`."""
    tags = getattr(version, "tags", None) or {}
    return bool(doc_ids & set(json.loads(tags.get(SAW_TAG, "[]"))))


def record_forgotten(
    client: MlflowClient, names: ModelNames, doc_ids: set[str], containing: set[str]
) -> dict[str, list[str]]:
    """Add `doc_ids` to the lineage's forgotten set and mark the registered versions that held
    them: `containing` are the corpus versions with one of the documents. Returns the marked
    version numbers."""
    ids = sorted(forgotten(client, names) | doc_ids)
    for model in (names.index, names.adapter):
        try:
            client.set_registered_model_tag(model, FORGOTTEN_TAG, json.dumps(ids))
        except MlflowException:
            continue  # nothing registered under this name yet
    first = min((_version_number(v) for v in containing), default=None)
    marked: dict[str, list[str]] = {"index_versions": [], "adapter_versions": []}
    listed = json.dumps(sorted(doc_ids))
    for model, key, held in (
        (names.index, "index_versions", lambda v: v in containing),
        (names.adapter, "adapter_versions", lambda v: first is not None and _version_number(v) >= first),
    ):
        for version in client.search_model_versions(f"name = '{model}'"):
            if held(version.tags.get("corpus_version", "")):
                tag = "forgotten" if model == names.index else SAW_TAG
                client.set_model_version_tag(model, version.version, tag, listed)
                marked[key].append(str(version.version))
    return marked
