"""`retrieval.rerank: auto`: a cross-encoder trained on the fit questions stays only where it beats
the first stage on the validation questions, and then travels with the index snapshot."""

from __future__ import annotations

from pathlib import Path

from components.embed.encoder import encode
from components.stores.rerank import RERANKER, fit_reranker
from components.stores.retriever import Retriever

COLOURS = ["red", "blue", "green", "amber", "violet", "white", "black", "grey"]
OPTIONS = {
    "rerank": "auto",
    "rerank_min_pairs": 10,
    "tune_min_questions": 10,
    "base": "all-MiniLM-L6-v2",
    "seed": 0,
}


def _colour_corpus() -> tuple[Retriever, dict[str, str], list[str], list[set[str]]]:
    """Each item's gold sentence beside a chunk that repeats the question's words without the
    answer: BM25 ranks that chunk first for every question (first-stage MRR 0.5)."""
    ids, texts, questions, golds = [], [], [], []
    for i in range(60):
        item = f"item K{100 + i}"
        ids += [f"g{i}", f"d{i}"]
        texts += [
            f"The {item} is painted {COLOURS[i % 8]} at the plant.",
            f"Questions about {item}: what colour is {item}? "
            f"The colour of {item} is asked often; {item} colour.",
        ]
        questions.append(f"What colour is {item}?")
        golds.append({f"g{i}"})
    payloads = [{"doc_id": i} for i in ids]
    retriever = Retriever.build(ids, texts, encode(texts), payloads, "all-MiniLM-L6-v2", mode="bm25")
    return retriever, dict(zip(ids, texts, strict=True)), questions, golds


def test_auto_keeps_a_reranker_that_fixes_the_first_stage_and_the_snapshot_serves_it(tmp_path: Path) -> None:
    retriever, text_of, questions, golds = _colour_corpus()
    options = {**OPTIONS, "rerank_epochs": 2, "rerank_learning_rate": 1e-4}
    fit, validation = (questions[:40], golds[:40]), (questions[40:], golds[40:])
    report = fit_reranker(retriever, fit, validation, text_of, tmp_path / "staging" / RERANKER, options)
    assert report["kept"] and report["first_stage_mrr"] == 0.5 and report["reranked_mrr"] > 0.9, report
    retriever.save(tmp_path / "index")
    loaded = Retriever.load(tmp_path / "index")
    assert loaded.reranker is not None and Path(loaded.reranker.path) == tmp_path / "index" / RERANKER
    held_out = questions[40:]
    assert [h[0].id for h in loaded.first_stage(held_out, 1)] == [f"d{i}" for i in range(40, 60)]
    assert [h[0].id for h in loaded.retrieve(held_out, 1)] == [f"g{i}" for i in range(40, 60)]


def test_auto_drops_a_reranker_where_the_first_stage_is_already_perfect(tmp_path: Path) -> None:
    texts = [f"Part PN-{4100 + 7 * i}: the pump gasket of assembly {i % 3}." for i in range(40)]
    ids = [f"c{i}" for i in range(40)]
    retriever = Retriever.build(
        ids, texts, encode(texts), [{"doc_id": i} for i in ids], "all-MiniLM-L6-v2", mode="bm25"
    )
    questions, golds = [f"What is part PN-{4100 + 7 * i}?" for i in range(40)], [{c} for c in ids]
    options = {**OPTIONS, "rerank_epochs": 0.5, "rerank_learning_rate": 3e-5}
    fit, validation = (questions[:25], golds[:25]), (questions[25:], golds[25:])
    staging = tmp_path / "staging" / RERANKER
    report = fit_reranker(retriever, fit, validation, dict(zip(ids, texts, strict=True)), staging, options)
    assert report["state"] == "trained" and report["first_stage_mrr"] == 1.0 and not report["kept"]
    assert "does not beat" in report["reason"] and retriever.reranker is None and not staging.exists()
    retriever.save(tmp_path / "index")
    assert (
        not (tmp_path / "index" / RERANKER).exists() and Retriever.load(tmp_path / "index").reranker is None
    )
    # too few questions to judge: nothing is trained
    few = fit_reranker(retriever, fit, (questions[25:28], golds[25:28]), {}, staging, options)
    assert few["state"] == "none" and not few["kept"]
