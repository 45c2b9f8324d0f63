"""Document validation with a great-expectations suite; failures are quarantined with a reason."""

from __future__ import annotations

import logging
import os

import pandas as pd

from components.data.corpus import RawDocument, sha256

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
log = logging.getLogger(__name__)

# each expectation: (column, human reason for a failing row)
REASONS = {
    "readable": "unreadable: {error}",
    "n_chars": "empty or too short ({n_chars} characters, minimum {min_chars})",
    "n_chars_max": "oversized ({n_chars} characters, maximum {max_chars})",
    "first_copy": "duplicate of {duplicate_of} (same content)",
    "first_id": "duplicate document id {doc_id}",
}


def documents_frame(documents: list[RawDocument]) -> pd.DataFrame:
    """One row a document with the derived columns the suite checks."""
    df = pd.DataFrame(
        {
            "doc_id": [d.doc_id for d in documents],
            "version": [d.version for d in documents],
            "source": [d.source for d in documents],
            "text": [d.text for d in documents],
            "metadata": [d.metadata for d in documents],
            "error": [d.error or "" for d in documents],
        }
    )
    df["readable"] = df["error"] == ""
    df["n_chars"] = df["text"].str.strip().str.len()
    df["sha256"] = [sha256(t) for t in df["text"]]
    key = df["version"] + "\x00" + df["sha256"]
    first_source = df.groupby(key)["source"].transform("first")
    df["first_copy"] = ~key.duplicated() | ~df["readable"]
    df["duplicate_of"] = first_source
    df["first_id"] = ~(df["version"] + "\x00" + df["doc_id"]).duplicated()
    return df


def _run_suite(df: pd.DataFrame, min_chars: int, max_chars: int) -> dict[str, list[int]]:
    """Run the great-expectations suite; returns failing row indexes per check."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    asset = context.data_sources.add_pandas("corpus").add_dataframe_asset("documents")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df})
    checks = {
        "readable": gx.expectations.ExpectColumnValuesToBeInSet(column="readable", value_set=[True]),
        "n_chars": gx.expectations.ExpectColumnValuesToBeBetween(column="n_chars", min_value=min_chars),
        "n_chars_max": gx.expectations.ExpectColumnValuesToBeBetween(column="n_chars", max_value=max_chars),
        "first_copy": gx.expectations.ExpectColumnValuesToBeInSet(column="first_copy", value_set=[True]),
        "first_id": gx.expectations.ExpectColumnValuesToBeInSet(column="first_id", value_set=[True]),
    }
    suite = gx.ExpectationSuite(name="documents", expectations=list(checks.values()))
    suite = context.suites.add(suite)
    result = batch.validate(suite, result_format="COMPLETE")
    failures: dict[str, list[int]] = {}
    for name, outcome in zip(checks, result.results, strict=True):
        failures[name] = list(outcome.result.get("unexpected_index_list") or [])
    return failures


def validate_documents(
    documents: list[RawDocument], min_chars: int, max_chars: int
) -> tuple[pd.DataFrame, list[dict]]:
    """Split documents into valid rows and quarantine records `{doc_id, source, version, reason}`."""
    if not documents:
        return documents_frame([]), []
    df = documents_frame(documents)
    failures = _run_suite(df, min_chars, max_chars)
    reasons: dict[int, str] = {}
    # unreadable rows fail the length check too; report only their first reason
    for check, indexes in failures.items():
        for i in indexes:
            if i in reasons:
                continue
            row = df.loc[i]
            reasons[i] = REASONS[check].format(
                error=row["error"],
                n_chars=row["n_chars"],
                min_chars=min_chars,
                max_chars=max_chars,
                duplicate_of=row["duplicate_of"],
                doc_id=row["doc_id"],
            )
    quarantined = [
        {
            "doc_id": df.at[i, "doc_id"],
            "source": df.at[i, "source"],
            "version": df.at[i, "version"],
            "reason": reason,
        }
        for i, reason in sorted(reasons.items())
    ]
    valid = df.drop(index=list(reasons)).reset_index(drop=True)
    columns = ["doc_id", "version", "source", "text", "n_chars", "sha256", "metadata"]
    return valid[columns], quarantined
