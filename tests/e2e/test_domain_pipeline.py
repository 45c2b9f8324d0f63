"""Per-domain adapters through `dvc repro` as a user runs it (`adapter-train.per_domain: true`):
one adapter per domain of the tiny corpus, trained on that domain's questions and passages,
carried by continual-update to the newest version, evaluated on its own test questions, gated and
registered as `retro-kb-adapter-<domain>` linked to the one shared index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.adapters.peft_adapter import read_artifact_config
from components.core.config import apply_overrides
from components.core.paths import Paths
from components.data.domains import read_domains
from components.registry import mlflow_registry as reg
from tests.conftest import BIN, KB, make_project, run_checked


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path, tiny_model: Path) -> Path:
    root = tmp_path_factory.mktemp("domain-project")
    env = make_project(root, tiny_corpus, tiny_model)
    overrides = ["adapter-train.per_domain=true", "adapter-train.min_domain_questions=2"]
    apply_overrides(root / "params.yaml", [*overrides, "register.tracking_uri=sqlite:///mlruns/mlflow.db"])
    run_checked([str(BIN / "dvc"), "repro", "-q"], root, env)
    return root


def test_each_domain_gets_an_adapter_trained_on_its_own_questions(project: Path) -> None:
    layout = Paths(project)
    domains = read_domains(layout.domain_adapters)
    skipped = json.loads((layout.domain_adapters / "domains.json").read_text())["skipped"]
    assert len(domains) >= 2, skipped
    trained = json.loads(layout.metrics_of("adapter-train").read_text())["domains"]["trained"]
    assert sorted(trained) == domains
    for domain in domains:
        own = layout.for_domain(domain)
        assert read_artifact_config(own.current_adapter)["domain"] == domain
        # its examples are its own domain's questions: fewer than the main adapter's
        assert (
            0
            < trained[domain]["examples"]
            < json.loads(layout.metrics_of("adapter-train").read_text())["examples"]
        )
        assert json.loads(own.metrics_of("evaluate").read_text())["corpus_version"]
    evaluated = json.loads(layout.metrics_of("evaluate").read_text())["domains"]
    assert sorted(evaluated) == domains


def test_each_domain_adapter_is_registered_against_the_shared_index(project: Path) -> None:
    client = reg.configure(f"sqlite:///{project}/mlruns/mlflow.db")
    registered = json.loads(Paths(project).metrics_of("register").read_text())
    domains = read_domains(Paths(project).domain_adapters)
    assert reg.registered_domains(client, KB) == domains
    for domain in domains:
        entry = registered["domains"][domain]
        assert str(entry["index_version"]) == str(registered["index_version"])
        version = client.get_model_version(KB.of_domain(domain).adapter, str(entry["adapter_version"]))
        assert version.tags["index_version"] == str(registered["index_version"])
