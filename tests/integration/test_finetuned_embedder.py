"""A fine-tuned embedder through the stages: made once per corpus lineage by embed, carried in the
index snapshot (which serving opens) and named by its hash; a corpus update reuses it and updates
the index incrementally; too few pairs keep the named embedder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from components.core.config import load_params_file, set_dotted
from components.core.paths import Paths
from components.data.synthetic import DOMAINS, KnowledgeBase
from components.embed.encoder import encode
from components.stages import chunk, embed, index, ingest
from components.stores.retriever import SNAPSHOT_EMBEDDER, Retriever
from tests.conftest import ROOT, run_stage


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Versions v1 and v2 of a 40-document corpus; v2 adds 8 documents."""
    out = tmp_path_factory.mktemp("kb")
    kb = KnowledgeBase(seed=5)
    for domain in DOMAINS:
        kb.add_entities(domain.name, 8)
    kb.write(out / "v1")
    for domain in DOMAINS[:2]:
        kb.add_entities(domain.name, 4)
    kb.write(out / "v2")
    return out


def _project(tmp_path: Path, corpus: Path, **retrieval: object) -> tuple[Paths, dict, Path]:
    source = tmp_path / "corpus"
    shutil.copytree(corpus / "v1", source / "v1")
    params = load_params_file(ROOT / "params.yaml")
    set_dotted(params, "ingest.source", str(source))
    set_dotted(params, "index.store_params", {"factory": "Flat"})
    for key, value in {"finetune_epochs": 1, "finetune_batch_size": 16, **retrieval}.items():
        set_dotted(params, f"retrieval.{key}", value)
    return Paths(tmp_path), params, source


def _build(params: dict, layout: Paths) -> tuple[dict, dict]:
    embedded = [run_stage(stage, params, layout.root) for stage in (ingest, chunk, embed)][-1]
    return embedded, run_stage(index, params, layout.root)


def test_the_index_carries_the_finetuned_embedder_and_updates_reuse_it(tmp_path: Path, corpus: Path) -> None:
    layout, params, source = _project(tmp_path, corpus, finetune="on")
    embedded, built = _build(params, layout)
    tuned = embedded["finetune"]
    assert tuned["state"] == "trained" and tuned["pairs"] >= 50 and tuned["steps"] >= 1
    digest = embedded["embedder_hash"]
    assert embedded["embedder"] == f"all-MiniLM-L6-v2+finetuned@{digest}" == built["embedder"]
    assert built["embedder_hash"] == digest
    # the snapshot holds the embedder, and what opens the snapshot (serving) embeds with it
    inside = layout.index / SNAPSHOT_EMBEDDER
    assert json.loads((inside / "finetune.json").read_text())["model_hash"] == digest
    opened = Retriever.load(layout.index)
    assert Path(opened.embedder) == inside
    question = ["What is the boiling point of Varnholt?"]
    served = encode(question, opened.embedder)
    assert np.allclose(served, encode(question, str(layout.embeddings / "finetuned")), atol=1e-5)
    assert not np.allclose(served, encode(question, "all-MiniLM-L6-v2"), atol=1e-3)
    # a new corpus version of the same lineage: the same embedder, only new chunks, an update
    shutil.copytree(corpus / "v2", source / "v2")
    second, updated = _build(params, layout)
    assert second["finetune"]["state"] == "reused" and second["embedder_hash"] == digest
    assert 0 < second["embedded"] < second["chunks"]
    assert updated["update"]["mode"] == "incremental" and updated["index_version"] == 2
    assert (layout.index / SNAPSHOT_EMBEDDER / "finetune.json").exists()


def test_too_few_pairs_keep_the_named_embedder(tmp_path: Path, corpus: Path) -> None:
    layout, params, _ = _project(tmp_path, corpus, finetune="auto", finetune_min_pairs=10_000)
    embedded, built = _build(params, layout)
    assert (
        embedded["finetune"]["state"] == "base"
        and "fewer than finetune_min_pairs" in embedded["finetune"]["reason"]
    )
    assert embedded["embedder"] == built["embedder"] == "all-MiniLM-L6-v2" and built["embedder_hash"] is None
    assert not (layout.index / SNAPSHOT_EMBEDDER).exists() and not (layout.embeddings / "finetuned").exists()
    assert Retriever.load(layout.index).embedder == "all-MiniLM-L6-v2"
