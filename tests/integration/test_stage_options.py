"""Stages run in-process with options set through params: a corpus of documents alone (the
unsupervised objective; registered but not promoted) and the memory fusion modes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from components.core.config import load_params_file, set_dotted
from components.core.paths import Paths
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
from tests.conftest import ROOT, run_stage


def prepare(layout: Paths, corpus: Path, tiny_model: Path, overrides: dict) -> dict:
    """The repository's params for a tiny model and corpus with `overrides`, and the stages up to
    the index already run."""
    params = load_params_file(ROOT / "params.yaml")
    tiny = {
        "ingest.source": str(corpus),
        "model.base": str(tiny_model),
        "adapter-train.steps": 3,
        "adapter-train.max_trainable_share": 0.5,
        "adapter-train.synthesize.mode": "off",  # the corpus's own questions (or none: the lm objective)
    }
    for key, value in (tiny | overrides).items():
        set_dotted(params, key, value)
    for stage in (ingest, chunk, embed, index, synthesize):
        run_stage(stage, params, layout.root)
    return params


def test_documents_only_corpus_runs_every_stage(tmp_path: Path, tiny_corpus: Path, tiny_model: Path) -> None:
    corpus = tmp_path / "docs-only"
    shutil.copytree(tiny_corpus, corpus)
    for version in ("v1", "v2"):
        (corpus / version / "qa.jsonl").unlink()
    layout = Paths(tmp_path)
    params = prepare(
        layout,
        corpus,
        tiny_model,
        {
            "register.tracking_uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        },
    )
    trained = run_stage(adapter_train, params, layout.root)
    assert trained["objective"] == "lm" and trained["examples"] > 0 and not trained["skipped"]
    updated = run_stage(continual_update, params, layout.root)
    assert updated["versions_learned"] == ["v1", "v2"] and updated["last_update"]["new_examples"] > 0
    assert run_stage(evaluate, params, layout.root)["questions"] == 0
    result = run_stage(register, params, layout.root)
    assert result["registered"] and not result["promoted"] and "no held-out questions" in result["reason"]


def test_lm_examples_exclude_the_chunk_itself(tiny_corpus: Path) -> None:
    from components.embed.encoder import encode
    from components.stores.retriever import Retriever
    from components.training.examples import language_modelling

    docs = sorted((tiny_corpus / "v1" / "docs").rglob("*.md"))
    rows = [{"chunk_id": f"c{i}", "doc_id": p.stem, "text": p.read_text()} for i, p in enumerate(docs)]
    texts = [r["text"] for r in rows]
    retriever = Retriever.build(
        [r["chunk_id"] for r in rows],
        texts,
        encode(texts),
        [{"doc_id": r["doc_id"]} for r in rows],
        "all-MiniLM-L6-v2",
    )
    examples = language_modelling(rows, retriever, k=2)
    assert len(examples) == len(rows)
    for example, row in zip(examples, rows, strict=True):
        assert row["text"] not in example.passages and len(example.passages) == 2
        assert example.question.startswith("Continue the text:")
        assert example.answer and example.answer in " ".join(row["text"].split())


def test_memory_fusion_through_params(tmp_path: Path, tiny_corpus: Path, tiny_model: Path) -> None:
    fusion = {"fusion": "gated", "gate": "head"}  # the chunks' own key/values, gated per head
    layout = Paths(tmp_path)
    overrides = {f"adapter-train.fusion.{key}": value for key, value in fusion.items()}
    params = prepare(
        layout,
        tiny_corpus,
        tiny_model,
        {
            "adapter-train.max_trainable_share": 0.9,
            **overrides,
            "index.chunk_kv": "precompute",
            "continual-update.steps": 2,
            "evaluate.max_questions": 4,
            "evaluate.max_new_tokens": 3,
            "serve.abstain.mode": "similarity",  # evaluate reports what abstention would do
            "serve.abstain.threshold": 0.99,  # no passage is that close to its question
        },
    )
    stored = json.loads(layout.metrics_of("index").read_text())["chunk_kv"]  # the index filled the store
    assert stored["mode"] == "precompute" and stored["encoded"] == stored["entries"] == stored["chunks"] > 0
    assert len(list(layout.chunk_kv.glob("*/*.safetensors"))) == stored["entries"]
    trained = run_stage(adapter_train, params, layout.root)
    assert trained["fusion"] == fusion["fusion"] and trained["fusion_params"] > 0
    run_stage(continual_update, params, layout.root)
    assert (layout.current_adapter / "fusion.safetensors").exists()
    config = json.loads((layout.current_adapter / "retro_config.json").read_text())
    assert config["fusion"] == fusion["fusion"]
    metrics = run_stage(evaluate, params, layout.root)
    assert set(metrics["retrieval"]) == {"first_stage"}  # no reranker at the index
    assert metrics["questions"] == 4 and {"base", "rag", "adapter"} <= set(metrics)
    abstention = metrics["abstention"]
    assert (abstention["mode"], abstention["abstained"], abstention["answers_given"]) == (
        "similarity",
        1.0,
        0,
    )


def test_continual_update_with_ewc_and_distillation_keeps_a_fixed_size(
    tmp_path: Path, tiny_corpus: Path, tiny_model: Path
) -> None:
    corpus = tmp_path / "kb"
    shutil.copytree(tiny_corpus, corpus)
    layout = Paths(tmp_path)
    params = prepare(
        layout,
        corpus,
        tiny_model,
        {
            "adapter-train.steps": 2,
            "continual-update.steps": 2,
            "continual-update.ewc_weight": 10.0,
            "continual-update.ewc_batches": 2,
            "continual-update.distill_weight": 0.5,
        },
    )
    run_stage(adapter_train, params, layout.root)
    first = run_stage(continual_update, params, layout.root)
    assert first["last_update"]["new_examples"] > 0 and first["regularizer_bytes"] > 0
    # the next version revises one fact: one more update, and nothing grows
    shutil.copytree(corpus / "v2", corpus / "v3")
    items = [json.loads(line) for line in (corpus / "v3" / "qa.jsonl").read_text().splitlines()]
    target = next(i for i in items if i["split"] == "train")
    doc = corpus / "v3" / "docs" / f"{target['doc_id']}.md"
    doc.write_text(doc.read_text().replace(target["answer"], "Qorvath Prime"))
    target["answer"] = "Qorvath Prime"
    (corpus / "v3" / "qa.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    for stage in (ingest, chunk, embed, index, synthesize):
        run_stage(stage, params, layout.root)
    second = run_stage(continual_update, params, layout.root)
    assert second["versions_learned"][-1] == "v3" and second["last_update"]["replay_revised"] >= 0
    assert second["adapter_bytes"] == first["adapter_bytes"]
    assert second["regularizer_bytes"] == first["regularizer_bytes"]


def test_data_parallel_training_through_accelerate_launch(
    tmp_path: Path, tiny_corpus: Path, tiny_model: Path
) -> None:
    layout = Paths(tmp_path)
    params = prepare(
        layout,
        tiny_corpus,
        tiny_model,
        {
            "adapter-train.lr": 0.01,
            "adapter-train.processes": 2,  # without GPUs: two CPU processes averaging through gloo
        },
    )
    trained = run_stage(adapter_train, params, layout.root)
    assert trained["processes"] == 2 and not trained["skipped"]
    # each process drew its own batches; DDP averaged the gradients, so the weights agree
    checksums = trained["rank_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    assert (layout.base_adapter / "adapter_model.safetensors").exists()
    assert not list(tmp_path.glob(".launch-params-*"))
