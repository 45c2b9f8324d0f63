"""The data layout: where each stage reads and writes, from the `paths` section of params.yaml.

`dvc.yaml` interpolates the same section (`${paths.chunks}`), so the layout is written once.
Relative paths are taken from the project root.
"""

from __future__ import annotations

import copy
from pathlib import Path

from pydantic import Field

from components.core.config import StrictModel


class MetricsFiles(StrictModel):
    """The metrics file of each stage (a DVC metrics entry), keyed by stage name (`-` as `_`)."""

    ingest: str = "data/metrics/ingest.json"
    chunk: str = "data/metrics/chunk.json"
    embed: str = "data/metrics/embed.json"
    index: str = "data/metrics/index.json"
    synthesize: str = "data/metrics/synthesize.json"
    adapter_train: str = "data/metrics/train.json"
    continual_update: str = "data/metrics/continual.json"
    evaluate: str = "data/metrics/evaluate.json"
    registration: str = Field("data/metrics/register.json", alias="register")


class PathParams(StrictModel):
    """The `paths` section."""

    documents: str = "data/interim/documents.parquet"
    qa: str = "data/interim/qa.parquet"
    quarantine: str = "data/quarantine.jsonl"
    chunks: str = "data/interim/chunks.parquet"
    questions: str = "data/interim/questions.parquet"
    embeddings: str = "data/interim/embeddings"
    index: str = "data/index"
    chunk_kv: str = "data/cache/chunk_kv"
    base_adapter: str = "data/models/adapter"
    current_adapter: str = "data/models/current"
    domain_adapters: str = "data/models/domains"
    domain_current: str = "data/models/domains-current"
    domain_evaluation: str = "data/metrics/domains"
    evaluation_table: str = "data/metrics/evaluate.md"
    predictions: str = "data/metrics/predictions.jsonl"
    evaluation_plots: str = "data/metrics/plots"
    metrics: MetricsFiles = Field(default_factory=MetricsFiles)


class Paths:
    """The layout resolved under a project root: every attribute is a `Path`."""

    def __init__(self, root: Path | str = ".", section: PathParams | None = None) -> None:
        section = section or PathParams()
        self.root = Path(root)
        plain = section.model_dump(exclude={"metrics"})
        for name, value in plain.items():
            setattr(self, name, self._under(value))
        self._metrics = {k: self._under(v) for k, v in section.metrics.model_dump(by_alias=True).items()}
        self.dvc_lock = self.root / "dvc.lock"

    documents: Path
    qa: Path
    chunk_kv: Path
    quarantine: Path
    chunks: Path
    questions: Path
    embeddings: Path
    index: Path
    base_adapter: Path
    current_adapter: Path
    domain_adapters: Path
    domain_current: Path
    domain_evaluation: Path
    evaluation_table: Path
    predictions: Path
    evaluation_plots: Path

    def _under(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.root / path

    def metrics_of(self, stage: str) -> Path:
        """The metrics file of a stage (`adapter-train` → `paths.metrics.adapter_train`)."""
        return self._metrics[stage.replace("-", "_")]

    def for_domain(self, domain: str) -> Paths:
        """The layout of one domain's adapter (adapter-train.per_domain): its adapters, evaluation
        report, predictions and evaluate metrics in the domain folders; corpus, index and every
        other stage's files shared."""
        scoped = copy.copy(self)
        scoped._metrics = dict(self._metrics)
        scoped.base_adapter = self.domain_adapters / domain
        scoped.current_adapter = self.domain_current / domain
        report = self.domain_evaluation / domain
        scoped.evaluation_table, scoped.predictions = report / "evaluate.md", report / "predictions.jsonl"
        scoped.evaluation_plots = report / "plots"
        scoped._metrics["evaluate"] = report / "evaluate.json"
        return scoped

    @property
    def metrics(self) -> Path:
        """The folder of the metrics files."""
        return self._metrics["ingest"].parent
