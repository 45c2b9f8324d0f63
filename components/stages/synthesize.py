"""synthesize: the questions every later stage trains and evaluates on.

Human questions pass through; a corpus version with too few train questions
(`adapter-train.synthesize`) gets cloze and teacher questions made from its chunks, filtered and
split by document (components/synthesis/). The table is a DVC output, so an unchanged corpus is
not synthesized again.
"""

from __future__ import annotations

from contextlib import closing
from typing import Any

import pandas as pd

from components.adapters.precision import cpu_dtype
from components.core.artifacts import read_table, versions_in, write_table
from components.core.params import PipelineParams
from components.core.paths import Paths
from components.data.chunking import read_chunks
from components.stages.entry import stage_main
from components.stores.versions import version_retriever
from components.synthesis.questions import (
    QUESTION_COLUMNS,
    human_questions,
    needs_questions,
    questions_summary,
    synthesize_version,
)
from components.synthesis.teacher import CachedTeacher


def run(params: PipelineParams, paths: Paths) -> dict[str, Any]:
    """Run the synthesize stage: make questions from the documents that have none."""
    s, model, retrieval, index = params.adapter_train.synthesize, params.model, params.retrieval, params.index
    qa, chunks = read_table(paths.qa, "ingest"), read_chunks(paths.chunks)
    frames, reports = [human_questions(qa)], {}
    name = model.teacher or model.base
    teacher = None
    if s.teacher:  # the teacher runs on the CPU
        teacher = CachedTeacher(name, cpu_dtype(model.dtype), s.teacher_batch_size, s.teacher_answer)
    for version in versions_in(chunks):
        human_train = int(((qa["version"] == version) & (qa["split"] == "train")).sum())
        if not needs_questions(s.mode, human_train, s.min_questions):
            continue
        opened = version_retriever(
            paths.index, paths.embeddings, chunks, version, model.embedder, retrieval.mode, retrieval.rrf_k,
            index.store, index.store_params,
        )  # fmt: skip
        with closing(opened) as retriever:
            round_trip = lambda qs, k: [[h.id for h in hits] for hits in retriever.retrieve(qs, k)]  # noqa: E731, B023
            part = chunks[chunks["version"] == version]
            rows, report = synthesize_version(part, version, s, teacher, round_trip, model.seed)
        frames.append(pd.DataFrame(rows, columns=QUESTION_COLUMNS))
        reports[version] = {"human_train_questions": human_train, **report}
    questions = pd.concat(frames, ignore_index=True)
    write_table(questions, paths.questions)
    return questions_summary(questions, reports, s.mode)


def main() -> None:
    """Command-line entry of the synthesize stage (`python -m components.stages.synthesize`)."""
    stage_main("synthesize", run)


if __name__ == "__main__":
    main()
