"""The promotion gate through the real evaluate and register stages, with real tiny adapters and a
real MLflow store: a good candidate is accepted, an equal one matches a champion at F1 1.0, a
damaged one is refused and the chain goes back to the champion, missing scores give a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from components.continual.chain import weights_hash
from components.core.config import set_dotted
from components.core.params import parse_params
from components.core.paths import Paths
from components.registry import mlflow_registry as reg
from components.registry.naming import LineageConflict, check_project_lineage
from components.stages import (
    adapter_train,
    chunk,
    continual_update,
    embed,
    evaluate,
    index,
    ingest,
    register,
    synthesize,
)
from tests.conftest import run_stage
from tests.integration.facts_project import FACTS, fact_corpus, trained_project


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Paths, dict, dict, dict]:
    """The facts project trained, evaluated and registered once: (layout, params, evaluate's
    metrics, register's result)."""
    layout, params = trained_project(tmp_path_factory.mktemp("gate"))
    metrics, first = _evaluate_and_register(layout, params)
    return layout, params, metrics, first


def _evaluate_and_register(layout: Paths, params: dict) -> tuple[dict, dict]:
    return run_stage(evaluate, params, layout.root), run_stage(register, params, layout.root)


def _damage(adapter: Path) -> None:
    """Zero the LoRA weights: the candidate is then the base model with passages, i.e. plain RAG."""
    path = adapter / "adapter_model.safetensors"
    save_file({k: torch.zeros_like(v) for k, v in load_file(str(path)).items()}, str(path))


def test_the_gate_through_evaluate_and_register(project: tuple[Paths, dict, dict, dict]) -> None:
    layout, params, metrics, first = project
    client = reg.configure(params["register"]["tracking_uri"])

    # a trained adapter that beats plain RAG on every question becomes challenger
    assert metrics["adapter"]["f1"] == 1.0 and metrics["rag"]["f1"] < 1.0
    assert first["promoted"] and "no champion yet" in first["reason"]
    assert first["gate"]["gate.candidate_minus_rag_lo"] > 0
    champion_hash = weights_hash(layout.current_adapter)
    champion_state = (layout.current_adapter / "state.json").read_text()
    client.set_registered_model_alias(reg.ADAPTER_MODEL, "champion", first["adapter_version"])

    # the same adapter again: a tie with a champion at F1 1.0 is accepted
    again = run_stage(register, params, layout.root)
    assert again["promoted"], again["reason"]
    assert again["gate"]["gate.champion_f1"] == 1.0 and again["gate"]["gate.candidate_minus_champion"] == 0.0

    # a damaged candidate is refused, and the chain goes back to the champion's artifact
    _damage(layout.current_adapter)
    assert weights_hash(layout.current_adapter) != champion_hash
    metrics, damaged = _evaluate_and_register(layout, params)
    assert metrics["adapter"]["f1"] == metrics["rag"]["f1"]  # zero LoRA: exactly the base model
    assert not damaged["promoted"] and not damaged["registered"]
    assert "does not lie above 0" in damaged["reason"]
    assert f"starts from the champion, retro-adapter v{first['adapter_version']}" in damaged["parent"]
    assert weights_hash(layout.current_adapter) == champion_hash
    assert (layout.current_adapter / "state.json").read_text() == champion_state
    run_stage(continual_update, params, layout.root)  # the next update resumes from the champion
    assert weights_hash(layout.current_adapter) == champion_hash
    run = client.get_run(damaged["run_id"]).data
    assert run.tags["gate"] == "refused" and run.tags["gate_reason"] == damaged["reason"]
    challenger = client.get_model_version_by_alias(reg.ADAPTER_MODEL, "challenger")
    assert challenger.version == again["adapter_version"]


def test_missing_scores_give_a_reason(project: tuple[Paths, dict, dict, dict]) -> None:
    layout, params, _, _ = project
    run_stage(evaluate, params, layout.root)
    rows = [json.loads(line) for line in layout.predictions.read_text().splitlines()]
    without_rag = [{k: v for k, v in r.items() if k != "rag"} for r in rows]
    layout.predictions.write_text("".join(json.dumps(r) + "\n" for r in without_rag))
    result = run_stage(register, params, layout.root)
    assert not result["promoted"]
    assert "RAG (base model + retrieval) has no per-question scores" in result["reason"]


def test_a_second_corpus_gets_its_own_registered_models_and_index_lineage(
    project: tuple[Paths, dict, dict, dict],
) -> None:
    layout, params, _, _ = project
    client = reg.configure(params["register"]["tracking_uri"])
    sample = client.get_registered_model(reg.ADAPTER_MODEL)
    assert sample.tags["corpus"] == "data/raw/sample"
    sample_versions = len(client.search_model_versions(f"name = '{reg.ADAPTER_MODEL}'"))
    facts = {
        k: (t.replace("Talmir", "Orbell"), q, a.replace("Talmir", "Orbell")) for k, (t, q, a) in FACTS.items()
    }
    fact_corpus(layout.root / "clinic", facts)
    other = json.loads(json.dumps(params))
    set_dotted(other, "ingest.source", "clinic")

    # a fixed name that holds the sample's lineage is refused before anything is trained
    set_dotted(other, "register.model_name", "retro")
    with pytest.raises(
        LineageConflict, match="holds corpus 'data/raw/sample', not 'clinic'.*register.model_name"
    ):
        check_project_lineage(parse_params(other).registration, "clinic", layout.root)

    set_dotted(other, "register.model_name", "auto")
    for stage in (ingest, chunk, embed, index, synthesize):
        run_stage(stage, other, layout.root)
    manifest = json.loads((layout.index / "manifest.json").read_text())
    assert manifest["parent"] is None and manifest["update"]["mode"] == "full"  # a new lineage
    for stage in (adapter_train, continual_update, evaluate):
        run_stage(stage, other, layout.root)
    result = run_stage(register, other, layout.root)
    assert (
        result["model_name"] == "retro-clinic"
        and result["promoted"]
        and "no champion yet" in result["reason"]
    )
    clinic = reg.ModelNames("retro-clinic")
    assert client.get_registered_model(clinic.adapter).tags["corpus"] == "clinic"
    assert client.get_model_version(clinic.adapter, result["adapter_version"]).tags["corpus"] == "clinic"
    # side by side: the sample's registered versions are untouched
    assert len(client.search_model_versions(f"name = '{reg.ADAPTER_MODEL}'")) == sample_versions
    assert len(client.search_model_versions(f"name = '{clinic.adapter}'")) == 1
