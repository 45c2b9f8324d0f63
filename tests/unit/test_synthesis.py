"""Questions made from documents: cloze spans, sampling, filters and the split by document."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd

from components.data.clauses import clause_questions
from components.data.cloze import BLANK, answer_spans, pick_spans
from components.evaluation.compare import held_out
from components.stores.retriever import Retriever
from components.synthesis.questions import (
    candidate_pairs,
    eval_question_source,
    filter_pairs,
    held_out_documents,
    needs_questions,
    sample_chunks,
)
from components.synthesis.teacher import clean_question

CHUNKS = [
    ("guide", "The maximum daily dose of velorane is 40 mg for adults. Children under 12 years get 10 mg."),
    ("guide", "Call os.path.join() to build the path, then pass it to the Kestrel loader in version 3.11."),
    ("guide", "The Halvard agreement names the Tallinn District Court for every dispute that arises."),
    ("pump", "The serial number of the pump is KX-4471 and it was serviced in 2019 by the Orbis team."),
    ("pump", "The gateway listens on port 8443 and restarts every Sunday at 03:00 for maintenance."),
    ("notes", "Tidal flats flood twice a day and host about 3000 birds during the spring migration."),
]


def chunk_frame() -> pd.DataFrame:
    return pd.DataFrame(
        [{"chunk_id": f"c{i}", "doc_id": d, "text": t, "version": "v1"} for i, (d, t) in enumerate(CHUNKS)]
    )


def bm25_round_trip(frame: pd.DataFrame):  # noqa: ANN201
    """The off-the-shelf lexical retriever over the chunks (no embedder needed)."""
    vectors = np.random.default_rng(0).normal(size=(len(frame), 8)).astype("float32")
    payloads = [{"doc_id": d} for d in frame["doc_id"]]
    retriever = Retriever.build(list(frame["chunk_id"]), list(frame["text"]), vectors, payloads, "unused",
                                mode="bm25", store_params={"factory": "Flat"})  # fmt: skip
    return lambda questions, k: [[h.id for h in hits] for hits in retriever.retrieve(questions, k)]


def test_answer_spans_are_numbers_identifiers_codes_and_names() -> None:
    spans = {
        s.text
        for s in answer_spans("Call os.path.join() on port 8443 for KX-4471 near Tallinn District Court.")
    }
    assert {"os.path.join()", "8443", "KX-4471", "Tallinn District Court"} <= spans
    assert not {s.text for s in answer_spans("A study [2] of 3 cases.")} & {"2", "3"}  # citations, one digit


def test_cloze_questions_blank_a_span_their_chunk_holds() -> None:
    rng = random.Random(0)
    for _, text in CHUNKS:
        for sentence, span in pick_spans(text, 2, rng):
            assert span.text in text and sentence.count(span.text) == 1
            masked = sentence[: span.start] + BLANK + sentence[span.end :]
            assert BLANK in masked and span.text not in masked


def test_sampling_is_stratified_by_document_and_stable() -> None:
    frame = chunk_frame()
    picked = sample_chunks(frame, 3, seed=0)
    assert sorted(c["doc_id"] for c in picked) == ["guide", "notes", "pump"]  # one from each first
    assert [c["chunk_id"] for c in sample_chunks(frame, 3, seed=0)] == [c["chunk_id"] for c in picked]
    assert len(sample_chunks(frame, 100, seed=0)) == len(frame)


def test_test_documents_are_a_share_never_all() -> None:
    docs = [f"d{i}" for i in range(10)]
    held = held_out_documents(docs, 0.2, seed=0)
    assert len(held) == 2 and held == held_out_documents(list(reversed(docs)), 0.2, seed=0)
    assert (
        len(held_out_documents(["a", "b"], 0.9, seed=0)) == 1
        and held_out_documents(["a"], 0.5, seed=0) == set()
    )


def test_filters_drop_what_a_broken_pair_would_break() -> None:
    frame = chunk_frame()
    chunk = frame.iloc[0].to_dict()
    calls: list[list] = []

    def teacher(requests: list[tuple[str, str]]) -> list[str | None]:
        """What a teacher model might write for each requested answer."""
        calls.append(requests)
        return [
            "What is the maximum daily dose of velorane for adults?",
            "What is the answer to this question?",  # retrieves nothing in particular
            f"Which one is it, {requests[2][1]}?",  # gives its answer away
        ]

    pairs = candidate_pairs([chunk, frame.iloc[2].to_dict(), frame.iloc[3].to_dict()], 1, teacher, seed=0)
    pairs.append(dict(pairs[0]))  # a duplicate
    pairs.append({**pairs[0], "question": "Fill in the blank: ____ is the dose?", "answer": "12 kg"})
    kept = filter_pairs(pairs, bm25_round_trip(frame), k=1)
    assert kept.dropped["duplicate question"] == 1 and kept.dropped["answer not in its chunk"] == 1
    assert kept.dropped["question contains its answer"] >= 1
    assert kept.dropped["question does not retrieve its chunk in the top 1"] >= 1
    for pair in kept.pairs:
        assert pair["answer"] in pair["text"] and pair["answer"] not in pair["question"]
    assert len(calls) == 1 and {p["origin"] for p in kept.pairs} == {"cloze", "teacher"}


def test_teacher_replies_are_cut_to_one_question() -> None:
    assert clean_question("Question: What is the dose? It is 40 mg.") == "What is the dose?"
    assert clean_question("The dose is 40 mg.") is None and clean_question("Why?") is None


def test_human_test_questions_come_first_else_the_synthetic_split() -> None:
    common = {"question": "q", "answer": "a", "doc_id": "d", "split": "test", "version": "v1"}
    rows = [{"id": "h1", **common, "origin": "human"}, {"id": "s1", **common, "origin": "cloze"}]
    both = pd.DataFrame(rows)
    assert eval_question_source(both, "v1") == "human" and [t["id"] for t in held_out(both, "v1", 0, 0)] == [
        "h1"
    ]
    synthetic = both[both["origin"] != "human"]
    assert eval_question_source(synthetic, "v1") == "synthetic"
    assert [t["id"] for t in held_out(synthetic, "v1", 0, 0)] == ["s1"]
    assert eval_question_source(synthetic.iloc[0:0], "v1") is None
    assert needs_questions("auto", 3, 20) and not needs_questions("auto", 30, 20)
    assert needs_questions("always", 300, 20) and not needs_questions("off", 0, 20)


def test_topic_questions_are_answered_by_the_sentence_that_names_the_topic() -> None:
    frame = chunk_frame()
    pairs = candidate_pairs(frame.to_dict("records"), 0, None, seed=0, topic_per_chunk=1)
    assert pairs and {p["origin"] for p in pairs} == {"topic"}
    for pair in pairs:
        topic = pair["question"].removeprefix("What does the text say about ").removesuffix("?")
        assert topic in pair["answer"] and pair["answer"] in pair["text"]
        assert not topic.replace(".", "").isdigit()  # numbers are cloze answers, not topics


def test_clause_questions_ask_for_the_rest_of_a_clause_or_its_subject() -> None:
    sentence = "The TIV contains three or four inactivated viruses, which are grown in eggs."
    assert clause_questions(sentence) == [("What does the TIV contain?", "three or four inactivated viruses")]
    assert clause_questions(sentence, subjects=True) == [
        ("What does the TIV contain?", "three or four inactivated viruses"),
        ("What contains three or four inactivated viruses?", "The TIV"),
    ]
    assert ("What is Hepcidin?", "a part of the natural defense mechanism") in clause_questions(
        "Hepcidin is a part of the natural defense mechanism [3]."
    )
    # passive: only the subject can be asked for
    assert clause_questions("Samples were randomly allocated to two study arms.") == []
    assert clause_questions("Samples were randomly allocated to two study arms.", subjects=True) == [
        ("What was randomly allocated to two study arms?", "Samples")
    ]
    # a pronoun, a fronted clause or a noun that looks like a verb gives no question
    for sentence in (
        "We found that the vaccine is safe in adults.",
        "If the community contained fewer residents, the next one was annexed.",
        "Pneumonia remains the leading cause of death in children under five.",
    ):
        assert clause_questions(sentence) == [], sentence


def test_sentences_cut_by_a_window_or_wrapped_lines_and_asides_give_no_broken_question() -> None:
    from components.data.cloze import sentences

    # hard-wrapped lines are one sentence; a list item starts its own
    wrapped = (
        "The `dispatcher` class is a thin wrapper around a socket\nobject.\n- A list item follows it here."
    )
    assert sentences(wrapped) == [
        "The `dispatcher` class is a thin wrapper around a socket object.",
        "- A list item follows it here.",
    ]
    assert clause_questions("- The `tty` module defines functions for putting the tty into raw mode.") == [
        ("What does the `tty` module define?", "functions for putting the tty into raw mode")
    ]
    for broken in (
        "representing a directed graph where the keys are nodes and the values are lists.",  # cut start
        "The previous source was a stream for the",  # cut end
        "Otherwise (TOS is false), TOS is popped.",  # brackets do not close in the subject
        "- Authenticate command \u2014 requires response processing.",  # an aside
        "Items of `sys.path` that are not strings are ignored.",  # a relative clause
        "Objects returned by `open()` have all the above methods.",  # a past form modifying a noun
        "Padding is implicitly removed, if necessary.",  # passive behind an adverb and a comma
    ):
        assert clause_questions(broken) == [], broken


def test_clause_pairs_are_verbatim_spans_of_their_chunk() -> None:
    frame = chunk_frame()
    pairs = candidate_pairs(
        frame.to_dict("records"), 0, None, seed=0, clause_per_chunk=2, clause_subjects=True
    )
    assert pairs and {p["origin"] for p in pairs} == {"clause"}
    for pair in pairs:
        assert pair["answer"] in pair["text"] and pair["answer"] not in pair["question"]
    # c0 has one sentence with a known verb: both its questions, the rest of its clause and its subject
    assert {p["answer"] for p in pairs if p["chunk_id"] == "c0"} == {
        "40 mg for adults",
        "The maximum daily dose of velorane",
    }


def test_cloze_pairs_are_capped_at_their_share_in_each_split_unless_they_are_all_there_is() -> None:
    from collections import Counter

    from components.synthesis.questions import Synthesized, cap_share

    def pairs(origin: str, n: int, doc: str) -> list[dict]:
        return [{"origin": origin, "chunk_id": f"{doc}{i}", "question": f"{origin} {i}?", "doc_id": doc}
                for i in range(n)]  # fmt: skip

    def capped(*groups: list[dict]) -> Synthesized:
        kept = Synthesized([p for g in groups for p in g], Counter())
        cap_share(kept, "cloze", 0.25, seed=0, held_out={"held"})
        return kept

    mixed = capped(pairs("cloze", 40, "a"), pairs("clause", 30, "a"), pairs("cloze", 8, "held"))
    train = Counter(p["origin"] for p in mixed.pairs if p["doc_id"] == "a")
    assert train == {"cloze": 10, "clause": 30}  # 10 of 40 train pairs: a quarter
    assert sum(p["doc_id"] == "held" for p in mixed.pairs) == 8  # the test split had nothing else
    assert mixed.dropped == {"cloze pairs above their share": 30}
    again = capped(pairs("cloze", 40, "a"), pairs("clause", 30, "a"), pairs("cloze", 8, "held"))
    assert [p["question"] for p in again.pairs] == [p["question"] for p in mixed.pairs]  # seeded
    alone = capped(pairs("cloze", 40, "a"))
    assert len(alone.pairs) == 40 and not alone.dropped
