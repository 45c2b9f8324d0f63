"""`retro forget` with retraining, through the real stages with a tiny model and a real MLflow
store: the forgotten document goes into the corpus's forgotten.txt, ingest leaves it out of every
version, the first-version adapter is trained again without it, the continual chain restarts from
that adapter, and a champion that saw it is no longer a parent of the chain."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from components.continual.chain import weights_hash
from components.core.params import parse_params
from components.registry import mlflow_registry as reg
from components.registry.forget import record_forgotten, record_retrained
from components.registry.parent import last_accepted
from components.stages import evaluate, register
from flows.forget import documents_to_forget, retrain_without
from flows.knowledge_update import add_delta
from tests.conftest import run_stage
from tests.integration.facts_project import TRAINING_STAGES, trained_project


def test_retraining_takes_the_document_out_of_every_training_input(tmp_path: Path) -> None:
    layout, params = trained_project(tmp_path)
    client = reg.configure(params["register"]["tracking_uri"])
    run_stage(evaluate, params, layout.root)
    first = run_stage(register, params, layout.root)
    client.set_registered_model_alias(reg.ADAPTER_MODEL, "champion", first["adapter_version"])
    first_adapter = weights_hash(layout.base_adapter)

    containing, questions = documents_to_forget(layout.root, {"zorvex"})
    assert containing == {"v1"} and {q["id"] for q in questions} == {"zorvex-train", "zorvex-test"}
    names = reg.ModelNames(reg.ADAPTER_MODEL.removesuffix("-adapter"))
    marked = record_forgotten(client, names, {"zorvex"}, containing)
    assert marked["adapter_versions"] == [str(first["adapter_version"])]
    assert str(last_accepted(client, names.adapter).version) == str(first["adapter_version"])
    add_delta(layout.root, None, {"zorvex"})
    assert retrain_without(layout.root, parse_params(params), {"zorvex"}) == ["zorvex"]
    record_retrained(client, names, {"zorvex"})
    for stage in TRAINING_STAGES:
        run_stage(stage, params, layout.root)

    ingested = json.loads(layout.metrics_of("ingest").read_text())
    assert ingested["forgotten_documents"] == 1 and ingested["forgotten_questions"] == 2
    for table in (layout.documents, layout.qa, layout.chunks):
        assert "zorvex" not in set(pd.read_parquet(table)["doc_id"])
    assert weights_hash(layout.base_adapter) != first_adapter  # v1 held it: trained again
    state = json.loads((layout.current_adapter / "state.json").read_text())
    assert state["consumed"] == ["v1", "v2"] and state["base_adapter"] == weights_hash(layout.base_adapter)
    replayed = json.loads((layout.current_adapter / "replay.json").read_text())["items"]
    assert replayed and all(item["doc_id"] != "zorvex" for item in replayed)

    # the champion saw the document: a refused candidate no longer sends the chain back to it
    accepted = last_accepted(client, names.adapter)
    assert accepted is None or str(accepted.version) != str(first["adapter_version"])
