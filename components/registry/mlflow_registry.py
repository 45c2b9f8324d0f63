"""Registering index snapshots and adapters as linked MLflow model versions, and loading them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")

import mlflow  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from components.core.params import DEFAULT_TRACKING_URI  # noqa: E402

EXPERIMENT = "retro-peft"
DEFAULT_NAME = "retro"  # the bundled sample corpus's registered models


@dataclass(frozen=True)
class ModelNames:
    """The registered models of one corpus lineage: `<name>-adapter` and `<name>-index`; with a
    `domain`, that domain's adapter `<name>-adapter-<domain>`, linked to the same shared index."""

    name: str = DEFAULT_NAME
    domain: str | None = None

    @property
    def adapter(self) -> str:
        """Registered model name of the adapter (per domain when set)."""
        return f"{self.name}-adapter" + (f"-{self.domain}" if self.domain else "")

    def of_domain(self, domain: str) -> ModelNames:
        """The names of `domain`'s adapter in this lineage."""
        return ModelNames(self.name, domain)

    @property
    def index(self) -> str:
        """Registered model name of the index."""
        return f"{self.name}-index"


DEFAULT_NAMES = ModelNames()
ADAPTER_MODEL = DEFAULT_NAMES.adapter
INDEX_MODEL = DEFAULT_NAMES.index


def registered_domains(client: MlflowClient, names: ModelNames) -> list[str]:
    """The domains with a registered adapter (`<name>-adapter-<domain>`) in this lineage."""
    prefix = f"{names.name}-adapter-"
    found = client.search_registered_models(f"name LIKE '{prefix}%'")
    return sorted(m.name.removeprefix(prefix) for m in found if m.name.startswith(prefix))


def configure(tracking_uri: str = DEFAULT_TRACKING_URI, artifact_root: str | None = None) -> MlflowClient:
    """Point MLflow at the store and make sure the experiment exists with a local artifact root."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        location = None
        if tracking_uri.startswith("sqlite:///"):
            root = artifact_root or str(Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts")
            location = Path(root).resolve().as_uri()
        client.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    return client


def ensure_registered_model(client: MlflowClient, name: str, description: str) -> None:
    """Create the registered model `name` when it does not exist yet."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=description)


def find_version(client: MlflowClient, name: str, tag: str, value: str):  # noqa: ANN201
    """The newest version of `name` whose tag `tag` equals `value`, or None."""
    versions = client.search_model_versions(f"name = '{name}' and tag.`{tag}` = '{value}'")
    return max(versions, key=lambda v: int(v.version)) if versions else None


def tag_values(client: MlflowClient, name: str, tag: str) -> set[str]:
    """The values of tag `tag` over every registered version of `name` (none when it is not registered)."""
    return {v.tags[tag] for v in client.search_model_versions(f"name = '{name}'") if tag in v.tags}


NOT_THERE = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


def version_by_alias(client: MlflowClient, name: str, alias: str):  # noqa: ANN201
    """The version of `name` holding `alias`; None when there is none. A registry that cannot be
    reached raises (MlflowException), so that it is not taken for a missing alias."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in NOT_THERE:
            return None
        raise


def register_version(  # noqa: ANN201
    client: MlflowClient,
    name: str,
    run_id: str,
    artifact_path: str,
    tags: dict[str, Any],
    description: str = "",
):
    """A new version of `name` whose source is the run's artifact folder, with string tags and a
    description (the line the MLflow UI shows in the versions table)."""
    source = f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}"
    tags = {k: str(v) for k, v in tags.items()}
    return client.create_model_version(
        name, source, run_id=run_id, tags=tags, description=description or None
    )


class DownloadFailed(LookupError):
    """A version's files could not be fetched (the store unreachable, say): worth trying again."""


@dataclass
class LoadedPair:
    """An adapter and index version downloaded from the registry, ready to serve."""

    adapter_version: str
    index_version: str
    adapter_dir: Path
    index_dir: Path
    tags: dict[str, str]


def download_pair(
    client: MlflowClient, alias: str, dst: Path | None = None, names: ModelNames = DEFAULT_NAMES
) -> LoadedPair:
    """Fetch the adapter version holding `alias` and the index version it is linked to."""
    adapter = version_by_alias(client, names.adapter, alias)
    if adapter is None:
        raise LookupError(
            f"no {names.adapter} version has alias {alias!r}; promote one in the MLflow UI "
            "or use --alias challenger"
        )
    return download_adapter_version(client, adapter, dst, names)


def download_adapter_version(
    client: MlflowClient, adapter: Any, dst: Path | None = None, names: ModelNames = DEFAULT_NAMES
) -> LoadedPair:
    """Fetch one adapter version and its linked index; LookupError when the link is broken."""
    index_version = adapter.tags.get("index_version")
    if not index_version:
        raise LookupError(f"{names.adapter} v{adapter.version} has no index_version tag")
    try:
        index = client.get_model_version(names.index, index_version)
    except MlflowException:
        raise LookupError(
            f"{names.adapter} v{adapter.version} is linked to {names.index} v{index_version}, "
            "which is not in the registry"
        ) from None

    def fetch(uri: str, sub: str) -> Path:
        target = {}
        if dst is not None:
            (dst / sub).mkdir(parents=True, exist_ok=True)
            target = {"dst_path": str(dst / sub)}
        try:
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, **target))
        except (MlflowException, OSError) as exc:
            raise DownloadFailed(f"cannot download {sub} artifacts from {uri}: {exc}") from None

    return LoadedPair(
        str(adapter.version),
        str(index.version),
        fetch(adapter.source, "adapter"),
        fetch(index.source, "index"),
        dict(adapter.tags),
    )
