"""Training and test questions made from a corpus's chunks when it has too few of its own.

Chunks are sampled stratified by document; each gives clause, cloze and topic questions (no
model) and, with a teacher, one question written for an answer picked first (a sentence or a
span). Every pair is filtered: the answer must occur in its chunk, the question must not contain
it, the question must retrieve its own chunk in the top k with the off-the-shelf retriever
(round-trip consistency), and duplicates go. Cloze pairs are capped at a share of each split.
Whole documents are held out as the synthetic test split, so test documents are never trained on.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from components.core.params import SynthesizeParams
from components.data.clauses import pick_clauses
from components.data.cloze import cloze, pick_spans, topic_question

QUESTION_COLUMNS = ["id", "question", "answer", "doc_id", "split", "version", "origin", "chunk_id"]
HUMAN = "human"
MODEL_FREE_ORIGINS = ("cloze", "topic", "clause")
SYNTHETIC_ORIGINS = (*MODEL_FREE_ORIGINS, "teacher")

# (passage, answer) requests -> one question each (None where the teacher gave none)
Teacher = Callable[[list[tuple[str, str]]], list[str | None]]
# questions, k -> the chunk ids each retrieves
RoundTrip = Callable[[list[str], int], list[list[str]]]


@dataclass
class Synthesized:
    """The kept pairs of one corpus version and why the others were dropped."""

    pairs: list[dict]
    dropped: Counter = field(default_factory=Counter)
    generated: Counter = field(default_factory=Counter)


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def sample_chunks(chunks: pd.DataFrame, max_chunks: int, seed: int) -> list[dict]:
    """Up to `max_chunks` chunks, taken in turn from each document (stratified), each document's
    in a seeded order that depends only on the chunk ids (an unchanged document gives the same)."""
    by_doc: dict[str, list[dict]] = {}
    for row in chunks.to_dict("records"):
        by_doc.setdefault(row["doc_id"], []).append(row)
    queues = [sorted(rows, key=lambda r: _rank(seed, r["chunk_id"])) for _, rows in sorted(by_doc.items())]
    picked: list[dict] = []
    depth = 0
    while len(picked) < max_chunks and any(depth < len(q) for q in queues):
        picked += [q[depth] for q in queues if depth < len(q)][: max_chunks - len(picked)]
        depth += 1
    return picked


def held_out_documents(doc_ids: list[str], share: float, seed: int) -> set[str]:
    """The documents held out for the synthetic test split: a seeded share of them, at least one
    and never all when there are two or more."""
    ordered = sorted(set(doc_ids), key=lambda d: _rank(seed, d))
    if share <= 0 or len(ordered) < 2:
        return set()
    count = min(len(ordered) - 1, max(1, round(share * len(ordered))))
    return set(ordered[:count])


def normalise_question(text: str) -> str:
    """Lowercase words without punctuation, to find duplicate questions."""
    return re.sub(r"\W+", " ", text.lower()).strip()


def candidate_pairs(
    sampled: list[dict],
    cloze_per_chunk: int,
    teacher: Teacher | None,
    seed: int,
    topic_per_chunk: int = 0,
    teacher_answer: str = "span",
    clause_per_chunk: int = 0,
    clause_subjects: bool = False,
) -> list[dict]:
    """The pairs of every sampled chunk, each generator from its own sentences of the chunk:
    cloze (a span blanked), topic (a name or code asked about, its sentence the answer), clause
    (the rest of a sentence's clause asked for and, with `clause_subjects`, its subject:
    components/data/clauses.py) and, with a teacher, one teacher question whose answer is a span
    or, with `teacher_answer` sentence, a whole sentence (the teacher then sees only that
    sentence)."""
    rng = random.Random(seed)
    pairs, requests = [], []
    for chunk in sampled:
        picks = pick_spans(chunk["text"], cloze_per_chunk + topic_per_chunk + 1, rng)
        for sentence, span in picks[:cloze_per_chunk]:
            pairs.append(_pair(chunk, cloze(sentence, span), span.text, "cloze"))
        for sentence, span in picks[cloze_per_chunk : cloze_per_chunk + topic_per_chunk]:
            if span.kind != "number":
                pairs.append(_pair(chunk, topic_question(span.text), sentence, "topic"))
        for _, question, answer in pick_clauses(chunk["text"], clause_per_chunk, rng, clause_subjects):
            pairs.append(_pair(chunk, question, answer, "clause"))
        if teacher is not None and picks:
            sentence, span = picks[-1]
            requests.append((chunk, sentence if teacher_answer == "sentence" else chunk["text"],
                             sentence if teacher_answer == "sentence" else span.text))  # fmt: skip
    if requests:
        questions = teacher([(passage, answer) for _, passage, answer in requests])
        pairs += [
            _pair(c, q, answer, "teacher") for (c, _, answer), q in zip(requests, questions, strict=True)
        ]
    return pairs


def _pair(chunk: dict, question: str | None, answer: str, origin: str) -> dict:
    return {"chunk_id": chunk["chunk_id"], "doc_id": chunk["doc_id"], "text": chunk["text"],
            "question": question, "answer": answer, "origin": origin}  # fmt: skip


def filter_pairs(pairs: list[dict], round_trip: RoundTrip, k: int) -> Synthesized:
    """The pairs that pass every check, and the count of each reason the others failed."""
    result = Synthesized([], Counter(), Counter(p["origin"] for p in pairs))
    checked, seen = [], set()
    for pair in pairs:
        reason = _content_problem(pair)
        key = normalise_question(pair["question"] or "")
        if reason is None and key in seen:
            reason = "duplicate question"
        if reason is not None:
            result.dropped[reason] += 1
            continue
        seen.add(key)
        checked.append(pair)
    retrieved = round_trip([p["question"] for p in checked], k) if checked else []
    for pair, ids in zip(checked, retrieved, strict=True):
        if pair["chunk_id"] in ids:
            result.pairs.append(pair)
        else:
            result.dropped[f"question does not retrieve its chunk in the top {k}"] += 1
    return result


def cap_share(kept: Synthesized, origin: str, share: float, seed: int, held_out: set[str]) -> None:
    """Keep a seeded sample of `origin`'s pairs so that they make at most `share` of each split's
    pairs (train, and the held-out documents' test split); all of them in a split where no other
    origin kept a pair. The rest are counted as dropped."""
    for test in (False, True):
        split = [p for p in kept.pairs if (p["doc_id"] in held_out) == test]
        mine = [p for p in split if p["origin"] == origin]
        others = len(split) - len(mine)
        allowed = int(share * others / (1 - share)) if share < 1 else len(mine)
        if not others or len(mine) <= allowed:
            continue
        ranked = sorted(mine, key=lambda p: _rank(seed, p["chunk_id"] + p["question"]))
        dropped = {id(p) for p in ranked[allowed:]}
        kept.pairs = [p for p in kept.pairs if id(p) not in dropped]
        kept.dropped[f"{origin} pairs above their share"] += len(dropped)


def _words(text: str) -> str:
    """Lower case with every run of whitespace one space: a chunk's line breaks do not count."""
    return " ".join(text.lower().split())


def _content_problem(pair: dict) -> str | None:
    question, answer = pair["question"], _words(pair["answer"])
    if not question:
        return "the teacher gave no question"
    if not answer or answer not in _words(pair["text"]):
        return "answer not in its chunk"
    if answer in question.lower():
        return "question contains its answer"
    return None


def as_questions(kept: list[dict], version: str, held_out_docs: set[str]) -> list[dict]:
    """Rows of the questions table: stable ids, `split` test for held-out documents."""
    rows = []
    for pair in kept:
        digest = hashlib.sha256(f"{pair['chunk_id']}\n{pair['question']}".encode()).hexdigest()[:12]
        rows.append({
            "id": f"syn-{pair['origin']}-{digest}", "question": pair["question"], "answer": pair["answer"],
            "doc_id": pair["doc_id"], "split": "test" if pair["doc_id"] in held_out_docs else "train",
            "version": version, "origin": pair["origin"], "chunk_id": pair["chunk_id"],
        })  # fmt: skip
    return rows


def synthesize_version(
    part: pd.DataFrame,
    version: str,
    settings: SynthesizeParams,
    teacher: Teacher | None,
    round_trip: RoundTrip,
    seed: int,
) -> tuple[list[dict], dict]:
    """The synthesized question rows of one corpus version's chunks (`part`) and its report."""
    started = time.perf_counter()
    teacher_before = getattr(teacher, "seconds", 0.0)
    sampled = sample_chunks(part, settings.max_chunks, seed)
    pairs = candidate_pairs(
        sampled,
        settings.cloze_per_chunk,
        teacher,
        seed,
        settings.topic_per_chunk,
        settings.teacher_answer,
        settings.clause_per_chunk,
        settings.clause_subjects,
    )
    kept = filter_pairs(pairs, round_trip, settings.roundtrip_k)
    held_out = held_out_documents(part["doc_id"].tolist(), settings.test_share, seed)
    cap_share(kept, "cloze", settings.cloze_max_share, seed, held_out)
    rows = as_questions(kept.pairs, version, held_out)
    seconds = time.perf_counter() - started
    teacher_seconds = getattr(teacher, "seconds", 0.0) - teacher_before
    teacher_made = kept.generated.get("teacher", 0)
    model_free = sum(kept.generated.get(origin, 0) for origin in MODEL_FREE_ORIGINS)
    report = {
        "sampled_chunks": len(sampled),
        "generated": dict(kept.generated),
        "kept": {o: sum(r["origin"] == o for r in rows) for o in SYNTHETIC_ORIGINS},
        "dropped": dict(kept.dropped),
        "train": sum(r["split"] == "train" for r in rows),
        "test": sum(r["split"] == "test" for r in rows),
        "test_documents": len(held_out),
        "seconds": round(seconds, 2),
        "teacher_seconds": round(teacher_seconds, 2),
        "teacher_pairs_per_s": round(teacher_made / teacher_seconds, 3) if teacher_seconds else None,
        "model_free_pairs_per_s": round(model_free / max(seconds - teacher_seconds, 1e-6), 1),
    }
    return rows, report


def questions_summary(questions: pd.DataFrame, reports: dict[str, dict], mode: str) -> dict:
    """synthesize.json: the newest version's human and synthetic counts, and each synthesized
    version's report."""
    latest = max(questions["version"], key=lambda v: (len(v), v)) if len(questions) else None
    newest = questions[questions["version"] == latest]
    synthetic = newest[newest["origin"] != HUMAN]
    return {
        "mode": mode,
        "synthesized_versions": sorted(reports, key=lambda v: (len(v), v)),
        "questions": len(newest),
        "human_questions": int((newest["origin"] == HUMAN).sum()),
        "synthetic_train": int((synthetic["split"] == "train").sum()),
        "synthetic_test": int((synthetic["split"] == "test").sum()),
        "versions": reports,
    }


def needs_questions(mode: str, human_train_questions: int, min_questions: int) -> bool:
    """Whether a corpus version gets synthesized questions under `adapter-train.synthesize.mode`."""
    return mode == "always" or (mode == "auto" and human_train_questions < min_questions)


def human_questions(qa: pd.DataFrame) -> pd.DataFrame:
    """Ingest's question table in the questions layout (origin `human`, no chunk id)."""
    return qa.assign(origin=HUMAN, chunk_id="").reindex(columns=QUESTION_COLUMNS)


def eval_question_source(questions: pd.DataFrame, version: str) -> str | None:
    """Which test questions of `version` evaluation uses: `human` when it has any, else
    `synthetic` when the synthetic test split has some, else None."""
    test = questions[(questions["version"] == version) & (questions["split"] == "test")]
    if "origin" in test and (test["origin"] == HUMAN).any():
        return HUMAN
    if len(test) and "origin" not in test:
        return HUMAN
    return "synthetic" if len(test) else None
