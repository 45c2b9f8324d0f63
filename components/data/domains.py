"""Document domains: which domain a document belongs to, and which domains get their own adapter
(`adapter-train.per_domain`).

A document's domain is its metadata `domain`, else its top folder (`law/contract-7.md` is in
`law`); the index stores it in every chunk's payload, so one domain's passages are retrieved with
the filter `{"domain": <domain>}`. The domains with adapters are listed in `domains.json` in the
folder of the per-domain adapters, which every later stage reads.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

DOMAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # usable in a registered model name
DOMAINS_FILE = "domains.json"


def domain_of(doc_id: str, metadata: dict[str, Any] | None = None) -> str:
    """The domain of a document: metadata `domain`, else the top folder of its id ("" if none)."""
    given = (metadata or {}).get("domain")
    if given is not None:
        return str(given)
    return doc_id.split("/", 1)[0] if "/" in doc_id else ""


def document_domains(documents: pd.DataFrame) -> dict[str, str]:
    """doc_id -> domain over every version of the documents table (a later version wins)."""
    found: dict[str, str] = {}
    for row in documents.itertuples():
        raw = getattr(row, "metadata", None)
        metadata = json.loads(raw) if isinstance(raw, str) and raw else (raw if isinstance(raw, dict) else {})
        found[row.doc_id] = domain_of(row.doc_id, metadata)
    return found


def read_document_domains(documents: Path) -> dict[str, str]:
    """doc_id -> domain of the ingest stage's documents table."""
    from components.core.artifacts import read_table

    return document_domains(read_table(documents, "ingest"))


def drop_other_domains(folder: Path, keep: list[str]) -> None:
    """Remove the folders in `folder` of domains no longer in `keep` (their adapters are stale)."""
    if Path(folder).exists():
        for child in Path(folder).iterdir():
            if child.is_dir() and child.name not in keep:
                shutil.rmtree(child)


def domain_filter(domain: str) -> dict[str, list[str]]:
    """The retrieval filter of one domain's passages."""
    return {"domain": [domain]}


def questions_of(qa: pd.DataFrame, domains: dict[str, str], domain: str) -> pd.DataFrame:
    """The questions whose document is in `domain`."""
    return qa[qa["doc_id"].map(domains).fillna("") == domain]


def choose_domains(
    qa: pd.DataFrame, domains: dict[str, str], version: str, min_questions: int
) -> tuple[list[str], dict[str, str]]:
    """(domains that get an adapter, {domain: why not} for the others), from the train questions
    of the first corpus version."""
    train = qa[(qa["version"] == version) & (qa["split"] == "train")]
    counts = train["doc_id"].map(domains).fillna("").value_counts().to_dict()
    chosen, skipped = [], {}
    for domain in sorted(set(domains.values()) | set(counts)):
        count = int(counts.get(domain, 0))
        if not DOMAIN_NAME.match(domain):
            skipped[domain or "(none)"] = "not a usable domain name (letters, digits, _ . -)"
        elif count < min_questions:
            skipped[domain] = f"{count} train questions, fewer than adapter-train.min_domain_questions"
        else:
            chosen.append(domain)
    return chosen, skipped


def write_domains(folder: Path, domains: list[str], skipped: dict[str, str]) -> None:
    """Record the domains with adapters (and why the others have none) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DOMAINS_FILE).write_text(json.dumps({"domains": domains, "skipped": skipped}, indent=2))


def read_domains(folder: Path) -> list[str]:
    """The domains with adapters recorded in `folder` (none when per-domain training is off)."""
    path = Path(folder) / DOMAINS_FILE
    return list(json.loads(path.read_text())["domains"]) if path.exists() else []
