"""The `forget` flow: take documents out of the corpus lineage and show that they are gone.

1. The closed-book figure of the current adapter on the documents' questions (and the base
   model's), before anything changes.
2. The registry records the documents as forgotten (services drop them at their next poll) and
   marks the versions that held them.
3. The next corpus version is the newest one without them (a delta of removals), and the
   knowledge-update path runs: the next index version deletes their chunks, the replay reservoir
   drops their questions, evaluate and register record the new pair.
4. The closed-book figure again, after the update; the report says whether the adapter still
   answers more about them than the base model does.
5. If it does and `forget.retrain` is `auto`, or whatever it does when it is `always`: the
   documents go into the corpus's `forgotten.txt`, which ingest leaves out of every version, the
   continual chain is restarted, and the pipeline runs again. The first-version adapter is trained
   again when its examples held them (else it never saw them), every later version is learned
   again from it, and the registry stops taking versions that saw them as parents. The
   closed-book figure a third time, after retraining.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from components.continual.chain import STATE
from components.continual.replay import RESERVOIR_FILE, purge_documents
from components.core.artifacts import read_table, versions_in, write_json
from components.core.params import PipelineParams, load_params
from components.data.corpus import FORGOTTEN_FILE, forgotten_documents
from components.registry.mlflow_registry import configure
from components.registry.naming import registry_name
from flows.knowledge_update import add_delta
from flows.pipeline import retro_pipeline


def closed_book_figures(root: Path, questions: list[dict], max_new_tokens: int) -> dict[str, Any]:
    """EM and F1 without passages of the current adapter and the base model on `questions`."""
    if not questions:
        return {"questions": 0}
    from components.adapters.builder import load_retro_model
    from components.evaluation.compare import closed_book

    params = load_params(root / "params.yaml")
    model = load_retro_model(params.layout(root).current_adapter)
    results = closed_book(model, questions, max_new_tokens, params.evaluate.batch_size, params.model.seed)
    return {"questions": len(questions)} | {
        name: {"em": r.em, "f1": r.f1, "f1_lo": r.intervals["f1"].low, "f1_hi": r.intervals["f1"].high}
        for name, r in results.items()
    }


def documents_to_forget(root: Path, doc_ids: set[str]) -> tuple[set[str], list[dict]]:
    """The corpus versions that held the documents and their questions (newest version's answers);
    ValueError for an id the newest version does not hold."""
    paths = load_params(root / "params.yaml").layout(root)
    documents, qa = read_table(paths.documents, "ingest"), read_table(paths.qa, "ingest")
    latest = versions_in(documents)[-1]
    unknown = sorted(doc_ids - set(documents.loc[documents["version"] == latest, "doc_id"]))
    if unknown:
        raise ValueError(f"the newest corpus version {latest} holds no document {unknown[:10]}")
    containing = set(documents.loc[documents["doc_id"].isin(doc_ids), "version"])
    mine = qa[(qa["version"] == latest) & qa["doc_id"].isin(doc_ids)]
    return containing, mine.to_dict("records")


def still_answers(figures: dict[str, Any]) -> bool:
    """Whether the adapter, without passages, answers the questions better than the base model."""
    return bool(figures["questions"]) and figures["adapter"]["f1"] > figures["base"]["f1"]


def retrain_without(project: Path, params: PipelineParams, doc_ids: set[str]) -> list[str]:
    """List `doc_ids` in the corpus's forgotten.txt and restart the continual chain, so the next
    pipeline run trains without them from the first version on; the ids now listed."""
    source = project / params.ingest.source
    listed = sorted(forgotten_documents(source) | doc_ids)
    (source / FORGOTTEN_FILE).write_text(
        "# documents taken out of every version (retro forget); ingest leaves them out\n"
        + "".join(f"{doc_id}\n" for doc_id in listed),
        encoding="utf-8",
    )
    (params.layout(project).current_adapter / STATE).unlink(missing_ok=True)
    return listed


def _report(doc_ids: set[str], result: dict[str, Any]) -> str:
    before, after = result["closed_book_before"], result["closed_book_after"]
    retrained = result.get("closed_book_after_retraining")

    def row(name: str, figures: dict) -> str:
        cells = [f"{figures[s]['f1']:.3f}" if s in figures else "n/a" for s in ("base", "adapter")]
        return f"| {name} | {figures['questions']} | {cells[0]} | {cells[1]} |"

    return "\n".join(
        [
            f"# Forgotten: {', '.join(sorted(doc_ids))}",
            "",
            f"New corpus version {result['version']}; marked {result['marked']}.",
            "",
            "| closed book on their questions | n | base F1 | adapter F1 |",
            "|---|---:|---:|---:|",
            row("before", before),
            row("after", after),
            *([row("after retraining", retrained)] if retrained else []),
            "",
            result["verdict"],
            "",
            f"The gate on the last version: {result['register'].get('reason', 'no decision recorded')}",
        ]
    )


def _verdict(still: bool, retrained: bool) -> str:
    if not still:
        done = "After retraining without them, the" if retrained else "The"
        return f"{done} adapter answers their questions without passages no better than the base model."
    if retrained:
        return (
            "Even after retraining without them, the adapter answers their questions better than the "
            "base model without passages: that comes from other documents or from what the base "
            "model learned, not from the forgotten ones, which no training example holds now."
        )
    return (
        "The adapter still answers their questions better than the base model without passages; "
        "forget.retrain is never, so it was not retrained without them."
    )


@flow(name="forget", log_prints=True)
def forget(doc_ids: list[str], root: str = ".") -> dict[str, Any]:
    """Take `doc_ids` out of the corpus lineage, run the update, report the closed-book figures."""
    logger = get_run_logger()
    project, ids = Path(root), set(doc_ids)
    params = load_params(project / "params.yaml")
    containing, questions = documents_to_forget(project, ids)
    metrics = params.layout(project).metrics_of("evaluate")
    budget = int(json.loads(metrics.read_text()).get("max_new_tokens") or 16) if metrics.exists() else 16
    before = closed_book_figures(project, questions, budget)
    from components.registry.forget import record_forgotten, record_retrained

    names = registry_name(params.registration.model_name, params.ingest.source, project)
    client = configure(params.registration.tracking_uri)
    marked = record_forgotten(client, names, ids, containing)
    chain = params.layout(project).current_adapter / RESERVOIR_FILE
    logger.info(
        "forgotten in %s: %s; marked %s; %d replayed questions dropped",
        names.name,
        sorted(ids),
        marked,
        purge_documents(chain, ids),
    )
    version, summary = add_delta(project, None, ids)
    logger.info("corpus version %s without them: %s", version, summary.as_dict())
    results = retro_pipeline(root=root)
    after = closed_book_figures(project, questions, budget)
    still, retrained = still_answers(after), None
    if params.forget.retrain == "always" or (still and params.forget.retrain == "auto"):
        listed = retrain_without(project, params, ids)
        record_retrained(client, names, ids)
        logger.info("retraining without %s (%s lists %d documents)", sorted(ids), FORGOTTEN_FILE, len(listed))
        results = retro_pipeline(root=root)
        retrained = closed_book_figures(project, questions, budget)
        still = still_answers(retrained)
    verdict = _verdict(still, retrained is not None)
    result = {
        "documents": sorted(ids),
        "version": version,
        "corpus_versions_with_them": sorted(containing),
        "marked": marked,
        "closed_book_before": before,
        "closed_book_after": after,
        "still_answers": still,
        "retrained": retrained is not None,
        **({"closed_book_after_retraining": retrained} if retrained else {}),
        "verdict": verdict,
        "register": results.get("register", {}),
    }
    write_json(project / "data" / "metrics" / "forget.json", result)
    create_markdown_artifact(
        key="retro-forget", markdown=_report(ids, result), description="Forgotten documents"
    )
    return result
