"""BM25 terms keep identifiers whole, and hybrid fusion weights fitted on validation questions."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.data.lexical import tokenize
from components.data.splits import validation_share
from components.embed.encoder import encode
from components.stores.fusion_fit import GRID, fit_weights
from components.stores.retriever import EQUAL_WEIGHTS, Retriever

BULLETINS = [
    "Service bulletin SB-1002 replaces the hydraulic seal of the nose gear.",
    "Bulletin SB-2002 supersedes SB-1001; see also page 1002 of the SB manual, SB table 1002.",
    "Rhoquin-137 is given at 12.5 mg twice daily.",
    "Rhoquin is given at 12 mg, then 5 mg, for 137 days.",
]


def test_identifiers_survive_tokenization() -> None:
    terms = tokenize("See SB-1002 and Rhoquin-137 at 12.5 mg (section 3.2.1), form A/B.")
    for whole in ("sb-1002", "rhoquin-137", "12.5", "mg", "3.2.1", "a/b"):
        assert whole in terms
    assert {"sb", "1002", "rhoquin", "137", "12", "5"} <= set(terms)  # the pieces match "SB 1002"
    assert "and" not in terms and "at" not in terms  # stop words
    assert tokenize("The end.")[-1] == "end"  # a full stop is not a joiner


@pytest.mark.parametrize(
    ("query", "gold"), [("Which bulletin is SB-1002?", 0), ("Rhoquin-137 dose 12.5 mg", 2)]
)
def test_bm25_matches_identifiers_as_written(query: str, gold: int) -> None:
    """The distractors hold every piece of the identifier, more often than the gold text."""
    import bm25s

    ids = [f"c{i}" for i in range(len(BULLETINS))]
    payloads = [{"doc_id": i} for i in ids]
    retriever = Retriever.build(ids, BULLETINS, encode(BULLETINS), payloads, "all-MiniLM-L6-v2", mode="bm25")
    assert retriever.retrieve([query], 1)[0][0].id == ids[gold]
    # the library's default word pattern splits them, and ranks a distractor first
    plain = bm25s.BM25()
    plain.index(bm25s.tokenize(BULLETINS, stopwords="en", show_progress=False), show_progress=False)
    docs, _ = plain.retrieve(
        bm25s.tokenize([query], stopwords="en", show_progress=False), k=1, show_progress=False
    )
    assert int(docs[0][0]) != gold


def _identifier_corpus() -> tuple[list[str], list[str], list[str]]:
    """Part records that read alike (dense cannot tell them apart), named by their part number."""
    texts, questions, gold = [], [], []
    for i in range(40):
        part = f"PN-{4100 + 7 * i}"
        texts.append(f"Part {part}: the pump housing gasket of assembly {i % 3}, checked at each service.")
        questions.append(f"What is part {part}?")
        gold.append(f"c{i}")
    return texts, questions, gold


def test_fitted_weights_beat_equal_fusion_where_bm25_is_better(tmp_path: Path) -> None:
    texts, questions, gold = _identifier_corpus()
    ids = [f"c{i}" for i in range(len(texts))]
    retriever = Retriever.build(ids, texts, encode(texts), [{"doc_id": i} for i in ids], "all-MiniLM-L6-v2")
    fit = fit_weights(retriever, questions, [{g} for g in gold], min_questions=20)
    assert fit.tuned and fit.weights["dense"] < 0.5 and fit.weights["dense"] + fit.weights["bm25"] == 1.0
    assert fit.chosen_mrr == 1.0 > fit.equal_mrr and len(fit.mrr["rrf"]) == len(fit.mrr["score"]) == len(GRID)
    assert fit.mrr["rrf"]["0.0"] == 1.0  # BM25 alone finds every part number
    # the weights travel with the snapshot and change what it retrieves
    retriever.weights = fit.weights
    retriever.save(tmp_path / "idx")
    loaded = Retriever.load(tmp_path / "idx")
    assert loaded.weights == fit.weights
    tuned_top = [h[0].id for h in loaded.retrieve(questions, 1)]
    loaded.weights = {"method": "rrf", "dense": 1.0, "bm25": 0.0}
    assert tuned_top == gold != [h[0].id for h in loaded.retrieve(questions, 1)]


def test_too_few_questions_or_no_hybrid_keep_equal_weights() -> None:
    texts, questions, gold = _identifier_corpus()
    ids = [f"c{i}" for i in range(len(texts))]
    retriever = Retriever.build(ids, texts, encode(texts), [{"doc_id": i} for i in ids], "all-MiniLM-L6-v2")
    few = fit_weights(retriever, questions[:5], [{g} for g in gold[:5]], min_questions=20)
    assert not few.tuned and few.weights == EQUAL_WEIGHTS and "(< 20)" in few.reason
    retriever.mode = "dense"
    assert "nothing to fuse" in fit_weights(retriever, questions, [{g} for g in gold]).reason


def test_validation_share_is_stable_and_near_the_share() -> None:
    ids = [f"q{i}" for i in range(2000)]
    chosen = validation_share(ids, 0.2)
    assert chosen == validation_share(list(ids), 0.2)
    assert 0.17 < sum(chosen) / len(ids) < 0.23
    assert validation_share(ids[::-1], 0.2) == chosen[::-1]  # by id, not by position


def test_score_fusion_counts_how_far_a_hit_stands_out() -> None:
    """Ranks alone tie a and b; normalised scores see that BM25 found `b` by far."""
    from components.stores.base import Hit
    from components.stores.retriever import reciprocal_rank_fusion, score_fusion

    dense = [Hit("a", 0.62, {}), Hit("b", 0.61, {}), Hit("c", 0.10, {})]
    sparse = [Hit("b", 9.0, {}), Hit("a", 0.2, {}), Hit("c", 0.1, {})]
    by_rank = reciprocal_rank_fusion([dense, sparse], 3, 60)
    assert by_rank[0].score == by_rank[1].score  # a and b: ranks 1 + 2 each
    by_score = score_fusion([dense, sparse], 3, [0.5, 0.5])
    assert [h.id for h in by_score] == ["b", "a", "c"] and by_score[0].score == pytest.approx(
        0.5 * (0.51 / 0.52) + 0.5
    )
    assert [h.id for h in score_fusion([dense, sparse], 3, [1.0, 0.0])] == ["a", "b", "c"]  # dense alone
