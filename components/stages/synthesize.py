"""synthesize: the questions every later stage trains and evaluates on.

Human questions pass through; a corpus version with too few train questions
(`adapter-train.synthesize`) gets cloze and teacher questions made from its chunks, filtered and
split by document. The table is a DVC output, so an unchanged corpus is not synthesized again.
"""

from __future__ import annotations

import time
from contextlib import closing
from typing import Any

import pandas as pd

from components.core.artifacts import read_table, versions_in, write_table
from components.core.params import PipelineParams
from components.core.paths import Paths
from components.data.chunking import read_chunks
from components.stages.entry import stage_main
from components.stores.versions import version_retriever
from components.synthesis.questions import (
    QUESTION_COLUMNS,
    candidate_pairs,
    filter_pairs,
    held_out_documents,
    human_questions,
    needs_questions,
    sample_chunks,
)
from components.synthesis.questions import as_questions as question_rows


def run(params: PipelineParams, paths: Paths) -> dict[str, Any]:
    s, model = params.adapter_train.synthesize, params.model
    qa, chunks = read_table(paths.qa, "ingest"), read_chunks(paths.chunks)
    frames, report = [human_questions(qa)], {}
    teacher = _timed_teacher(model.teacher or model.base, model.dtype, s.teacher_batch_size)
    for version in versions_in(chunks):
        human_train = int(((qa["version"] == version) & (qa["split"] == "train")).sum())
        if not needs_questions(s.mode, human_train, s.min_questions):
            continue
        started, teacher_before = time.perf_counter(), teacher.seconds
        part = chunks[chunks["version"] == version]
        sampled = sample_chunks(part, s.max_chunks, model.seed)
        pairs = candidate_pairs(sampled, s.cloze_per_chunk, teacher if s.teacher else None, model.seed)
        with closing(_retriever(params, paths, chunks, version)) as retriever:
            kept = filter_pairs(pairs, _chunk_ids_of(retriever), s.roundtrip_k)
        held_out = held_out_documents(part["doc_id"].tolist(), s.test_share, model.seed)
        rows = question_rows(kept.pairs, version, held_out)
        frames.append(pd.DataFrame(rows, columns=QUESTION_COLUMNS))
        seconds = time.perf_counter() - started
        report[version] = _version_report(human_train, sampled, kept, rows, held_out, seconds,
                                          teacher.seconds - teacher_before)  # fmt: skip
    questions = pd.concat(frames, ignore_index=True)
    write_table(questions, paths.questions)
    return _summary(questions, report, s.mode)


class _timed_teacher:  # noqa: N801 - used as a function
    """The teacher (loaded on first use), its answers cached by request and its time summed."""

    def __init__(self, name: str, dtype: str, batch_size: int) -> None:
        self.name, self.dtype, self.batch_size = name, dtype, batch_size
        self.cache: dict[tuple[str, str], str | None] = {}
        self.seconds = 0.0

    def __call__(self, requests: list[tuple[str, str]]) -> list[str | None]:
        from components.synthesis.teacher import ask_teacher

        new = sorted({r for r in requests if r not in self.cache})
        if new:
            run = ask_teacher(self.name, new, self.dtype, self.batch_size)
            self.cache.update(zip(new, run.questions, strict=True))
            self.seconds += run.seconds
        return [self.cache[r] for r in requests]


def _retriever(params: PipelineParams, paths: Paths, chunks: pd.DataFrame, version: str):  # noqa: ANN202
    model, retrieval, index = params.model, params.retrieval, params.index
    return version_retriever(
        paths.index, paths.embeddings, chunks, version, model.embedder, retrieval.mode, retrieval.rrf_k,
        index.store, index.store_params,
    )  # fmt: skip


def _chunk_ids_of(retriever):  # noqa: ANN001, ANN202
    return lambda questions, k: [[hit.id for hit in hits] for hits in retriever.retrieve(questions, k)]


def _version_report(human_train, sampled, kept, rows, held_out, seconds, teacher_seconds) -> dict:  # noqa: ANN001
    by_origin = {o: sum(r["origin"] == o for r in rows) for o in ("cloze", "teacher")}
    teacher_made = kept.generated.get("teacher", 0)
    return {
        "human_train_questions": human_train,
        "sampled_chunks": len(sampled),
        "generated": dict(kept.generated),
        "kept": by_origin,
        "dropped": dict(kept.dropped),
        "train": sum(r["split"] == "train" for r in rows),
        "test": sum(r["split"] == "test" for r in rows),
        "held_out_documents": len(held_out),
        "seconds": round(seconds, 2),
        "teacher_seconds": round(teacher_seconds, 2),
        "teacher_pairs_per_s": round(teacher_made / teacher_seconds, 3) if teacher_seconds else None,
        "cloze_pairs_per_s": round(kept.generated.get("cloze", 0) / max(seconds - teacher_seconds, 1e-6), 1),
    }


def _summary(questions: pd.DataFrame, report: dict, mode: str) -> dict[str, Any]:
    latest = versions_in(questions)[-1] if len(questions) else None
    newest = questions[questions["version"] == latest]
    synthetic = newest[newest["origin"] != "human"]
    return {
        "mode": mode,
        "synthesized_versions": sorted(report, key=lambda v: (len(v), v)),
        "questions": len(newest),
        "human_questions": int((newest["origin"] == "human").sum()),
        "synthetic_train": int((synthetic["split"] == "train").sum()),
        "synthetic_test": int((synthetic["split"] == "test").sum()),
        "versions": report,
    }


def main() -> None:
    stage_main("synthesize", run)


if __name__ == "__main__":
    main()
