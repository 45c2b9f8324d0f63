"""A project of four one-fact documents trained through the real stages with a tiny model and a
real MLflow store, for the gate and forgetting tests. The test questions repeat the train
questions, so an adapter learns them in a few seconds (these tests are about the registry and the
chain, not generalisation)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from components.core.config import load_params_file, set_dotted
from components.core.paths import Paths
from components.stages import adapter_train, chunk, continual_update, embed, index, ingest, synthesize
from tests.conftest import ROOT, build_tiny_model, corpus_texts, run_stage

FACTS = {
    "zorvex": ("Zorvex is made by Talmir Labs.", "Who makes Zorvex?", "Talmir Labs"),
    "varnholt": ("The Varnholt Act dates from 1999.", "When does the Varnholt Act date from?", "1999"),
    "quillan": ("Quillan is a town in Norway.", "Where is Quillan?", "Norway"),
    "belmor": ("The Belmor fund is run by Ostra Capital.", "Who runs the Belmor fund?", "Ostra Capital"),
}
TRAINING_STAGES = (ingest, chunk, embed, index, synthesize, adapter_train, continual_update)


def fact_corpus(folder: Path, facts: dict = FACTS) -> Path:
    """One document a fact, and one train and one test question each."""
    (folder / "docs").mkdir(parents=True)
    lines = []
    for doc_id, (text, question, answer) in facts.items():
        (folder / "docs" / f"{doc_id}.md").write_text(f"# {doc_id.title()}\n\n{text}\n")
        for split in ("train", "test"):
            item = {"id": f"{doc_id}-{split}", "question": question, "answer": answer, "doc_id": doc_id}
            lines.append(json.dumps(item | {"split": split}))
    (folder / "qa.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def trained_project(root: Path) -> tuple[Paths, dict]:
    """The facts corpus where the demo's sample lives (models retro-*), trained up to
    continual-update; the params are also written to the project's params.yaml."""
    corpus = fact_corpus(root / "data" / "raw" / "sample")
    model = build_tiny_model(root / "tiny", corpus_texts(corpus))
    params = load_params_file(ROOT / "params.yaml")
    settings = {
        "ingest.source": "data/raw/sample",
        "model.base": str(model),
        "adapter-train.steps": 60,
        "adapter-train.synthesize.mode": "off",  # the facts' own questions only
        "adapter-train.lr": 0.02,
        "adapter-train.validation_share": 0.0,
        "adapter-train.max_trainable_share": 0.5,
        "evaluate.max_new_tokens": 4,
        "register.tracking_uri": f"sqlite:///{root}/mlruns/mlflow.db",
    }
    for key, value in settings.items():
        set_dotted(params, key, value)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    layout = Paths(root)
    for stage in TRAINING_STAGES:
        run_stage(stage, params, layout.root)
    return layout, params
