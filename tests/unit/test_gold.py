"""Gold chunks by rule (span, overlap, document), the metrics built on them, and the intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.evaluation.compare import retrieval_scores
from components.evaluation.gold import Gold, GoldFinder, gold_counts
from components.evaluation.intervals import bootstrap, paired_difference
from components.evaluation.metrics import answer_support
from components.stores.base import Hit

CHUNKS = pd.DataFrame(
    [
        ("d1", "c1", 0, "The virus binds the ACE2 receptor on host cells."),
        ("d1", "c2", 1, "Incubation lasts five to six days in most patients."),
        ("d1", "c3", 2, "Masks reduce spread; the ACE2 receptor is also in the gut."),
        ("d2", "c4", 0, "Smoking was associated with severe outcomes."),
    ],
    columns=["doc_id", "chunk_id", "position", "text"],
)


@pytest.fixture
def finder() -> GoldFinder:
    return GoldFinder(CHUNKS, min_overlap=0.6)


def test_an_extractive_answer_is_gold_in_every_chunk_that_holds_the_span(finder: GoldFinder) -> None:
    assert finder.find("d1", "the ACE2 receptor") == Gold("span", ("c1", "c3"))
    # normalisation: case, punctuation and articles do not matter; words must match whole
    assert finder.find("d1", "Five to six days.") == Gold("span", ("c2",))
    assert finder.find("d1", "ACE") != Gold("span", ("c1", "c3"))


def test_a_paraphrased_answer_is_gold_in_the_chunk_with_the_best_token_overlap(finder: GoldFinder) -> None:
    # 3 of 4 answer tokens ("incubation", "six", "days") are in c2: 0.75 >= 0.6
    assert finder.find("d1", "incubation six days long") == Gold("overlap", ("c2",))
    # below the threshold the whole document is gold
    assert finder.find("d1", "incubation of ten hours long") == Gold("document", ("c1", "c2", "c3"))
    assert GoldFinder(CHUNKS, min_overlap=0.2).find("d1", "incubation of ten hours long") == Gold(
        "overlap", ("c2",)
    )


def test_label_answers_make_every_chunk_of_the_document_gold(finder: GoldFinder) -> None:
    for answer in ("yes", "No.", "maybe"):
        assert finder.find("d1", answer) == Gold("document", ("c1", "c2", "c3"))
    assert finder.find("unknown", "the ACE2 receptor") == Gold("document", ())
    golds = [finder.find("d1", "yes"), finder.find("d1", "the ACE2 receptor"), finder.find("d2", "smoking")]
    assert gold_counts(golds) == {"span": 2, "overlap": 0, "document": 1}


def test_chunk_level_scores_count_only_questions_with_a_located_answer() -> None:
    def hit(chunk: str, doc: str) -> Hit:
        return Hit(chunk, 1.0, {"doc_id": doc})

    rows = [
        [hit("c3", "d1"), hit("c2", "d1")],  # right document first, gold chunk second
        [hit("c4", "d2"), hit("c1", "d1")],  # gold chunk second, document second
        [hit("c9", "d9"), hit("c8", "d9")],  # a label answer: only the document counts
    ]
    test = [{"doc_id": "d1"}, {"doc_id": "d1"}, {"doc_id": "d1"}]
    golds = [Gold("span", ("c2",)), Gold("overlap", ("c1",)), Gold("document", ("c1", "c2", "c3"))]
    scores = retrieval_scores(rows, test, 1, golds)
    assert scores == {
        "chunk_recall@1": 0.0,
        "chunk_mrr": 0.5,
        "chunk_questions": 2,
        "doc_recall@1": 1 / 3,
        "doc_mrr": (1 + 0.5 + 0) / 3,
    }
    assert retrieval_scores(rows, test, 2, golds)["chunk_recall@2"] == 1.0
    labels_only = retrieval_scores(rows, test, 2, [golds[2]] * 3)  # no answer located in a chunk
    assert labels_only["chunk_questions"] == 0 and labels_only["chunk_recall@2"] is None


def test_answer_support_needs_every_content_token_in_the_passages() -> None:
    passages = ["The ACE2 receptor is found on host cells.", "Incubation: five days."]
    assert answer_support("the ACE2 receptor", passages) == 1.0
    assert answer_support("ACE2 and TMPRSS2", passages) == 0.0
    assert answer_support("the", passages) is None  # nothing to check


def test_bootstrap_interval_matches_the_known_spread_of_a_mean() -> None:
    rng = np.random.default_rng(3)
    values = rng.binomial(1, 0.3, size=900).astype(float).tolist()
    est = bootstrap(values, seed=0)
    half = 1.96 * np.sqrt(0.3 * 0.7 / 900)  # normal approximation: about 0.030
    assert est.low < est.mean < est.high and est.n == 900
    assert abs((est.high - est.low) / 2 - half) < 0.15 * half
    assert est.low < 0.3 < est.high
    assert bootstrap(values, seed=0) == est  # seeded
    assert bootstrap([], seed=0).n == 0


def test_paired_difference_cancels_what_the_systems_share() -> None:
    rng = np.random.default_rng(5)
    hard = rng.uniform(0, 1, size=200)  # per-question difficulty both systems share
    theirs = hard.tolist()
    ours = (hard + 0.05).tolist()
    paired = paired_difference(ours, theirs, seed=0)
    assert paired.mean == pytest.approx(0.05) and paired.high - paired.low < 1e-9
    unpaired_width = bootstrap(ours).high - bootstrap(ours).low
    assert unpaired_width > 0.05  # the two means alone could not separate the systems
    with pytest.raises(ValueError, match="same questions"):
        paired_difference([1.0], [1.0, 0.0])
