import json
from pathlib import Path

import pandas as pd
import pytest

from components.core.paths import Paths
from components.stages import ingest
from tests.conftest import run_stage

GOOD = "The maximum daily dose of Zorvex is 120 mg. It is made by Talmir Labs."


def _corpus(root: Path) -> Path:
    docs = root / "kb" / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "good.md").write_text(GOOD)
    (docs / "zcopy.txt").write_text(GOOD)
    (docs / "empty.md").write_text("   \n")
    (docs / "huge.txt").write_text("word " * 400)
    (docs / "latin1.txt").write_bytes("Caf\xe9 r\xe9sum\xe9 with enough characters".encode("latin-1"))
    (docs / "sub" / "page.html").write_text(
        "<html><script>var x=1;</script><h1>Varnholt Act</h1><p>Enacted in 1999 &amp; amended.</p></html>"
    )
    (docs / "batch.jsonl").write_text(
        json.dumps({"id": "j1", "text": "A jsonl document long enough to keep."})
        + "\n{not json\n"
        + json.dumps({"text": "no id"})
        + "\n"
    )
    (docs / "image.png").write_bytes(b"\x89PNG")
    qa = [
        {
            "id": "q1",
            "question": "Dose of Zorvex?",
            "answer": "120 mg",
            "doc_id": "good",
            "split": "train",
        },
        {"id": "q2", "question": "x?", "answer": "y", "doc_id": "empty", "split": "test"},
        {"id": "q3", "question": "x?", "answer": "y", "doc_id": "good", "split": "dev"},
    ]
    (root / "kb" / "qa.jsonl").write_text("\n".join(json.dumps(q) for q in qa) + "\n")
    return root / "kb"


def test_bad_documents_are_quarantined_with_reasons(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    layout = Paths(tmp_path)
    run_stage(ingest, {"ingest": {"source": str(corpus), "min_chars": 10, "max_chars": 1000}}, layout.root)
    docs = pd.read_parquet(layout.documents)
    assert sorted(docs["doc_id"]) == ["good", "j1", "sub/page"]
    page = docs.set_index("doc_id").loc["sub/page", "text"]
    assert "Enacted in 1999 & amended." in page and "var x" not in page
    reasons = {q["source"]: q["reason"] for q in map(json.loads, layout.quarantine.read_text().splitlines())}
    assert reasons["empty.md"].startswith("empty")
    assert reasons["huge.txt"].startswith("oversized")
    assert reasons["latin1.txt"].startswith("unreadable: undecodable")
    assert "unsupported file type .png" in reasons["image.png"]
    assert "invalid JSON" in reasons["batch.jsonl:2"]
    assert "needs 'id' and 'text'" in reasons["batch.jsonl:3"]
    assert reasons["zcopy.txt"] == "duplicate of good.md (same content)"
    assert "split must be train or test" in reasons["qa.jsonl:3"]
    assert "missing or quarantined" in reasons["qa:q2"]
    qa = pd.read_parquet(layout.qa)
    assert list(qa["id"]) == ["q1"]


def test_nothing_valid_fails_clearly_and_still_writes_nothing_partial(tmp_path: Path) -> None:
    docs = tmp_path / "kb" / "docs"
    docs.mkdir(parents=True)
    (docs / "a.md").write_text("")
    with pytest.raises(ValueError, match="no valid document"):
        run_stage(ingest, {"ingest": {"source": str(tmp_path / "kb")}}, tmp_path)
    assert not Paths(tmp_path).documents.exists()


def test_missing_docs_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "kb").mkdir()
    with pytest.raises(FileNotFoundError, match="no docs/ folder"):
        run_stage(ingest, {"ingest": {"source": str(tmp_path / "kb")}}, tmp_path)


def test_forgotten_documents_leave_every_version_with_their_questions(tmp_path: Path) -> None:
    for version, text in (("v1", "first"), ("v2", "second")):
        docs = tmp_path / "kb" / version / "docs"
        docs.mkdir(parents=True)
        for doc_id in ("keep", "gone"):
            (docs / f"{doc_id}.md").write_text(f"{doc_id} document, {text} version, long enough.")
        qa = [
            {"id": f"{d}-{version}", "question": "q?", "answer": "a", "doc_id": d, "split": "train"}
            for d in ("keep", "gone")
        ]
        (tmp_path / "kb" / version / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qa))
    (tmp_path / "kb" / "forgotten.txt").write_text("# taken out\ngone\n\nunknown-id\n")
    params = {"ingest": {"source": "kb"}}
    summary = run_stage(ingest, params, tmp_path)
    assert summary["forgotten_documents"] == 2 and summary["forgotten_questions"] == 2
    layout = Paths(tmp_path)
    documents, qa = pd.read_parquet(layout.documents), pd.read_parquet(layout.qa)
    assert set(documents["doc_id"]) == {"keep"} and len(documents) == 2
    assert set(qa["doc_id"]) == {"keep"} and len(qa) == 2
    quarantined = layout.quarantine.read_text()
    assert "gone" not in quarantined  # nothing of a forgotten document is kept, not even its name


def test_files_that_escape_the_corpus_are_too_large_or_badly_encoded_are_named(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    docs = corpus / "docs"
    outside = tmp_path / "secret.md"
    outside.write_text("A private file outside the corpus, long enough to be kept.")
    (docs / "link.md").symlink_to(outside)
    (docs / "big.md").write_text(GOOD + " more" * 300)  # about 1.6 kB, over max_file_mb below
    with (docs / "batch.jsonl").open("a") as fh:
        fh.write(
            json.dumps({"id": "../../etc/passwd", "text": "A document whose id leaves the corpus."}) + "\n"
        )
    with (corpus / "qa.jsonl").open("ab") as fh:
        fh.write(
            '{"id": "q4", "question": "Caf\xe9?", "answer": "y", "doc_id": "good", "split": "test"}\n'.encode(
                "latin-1"
            )
        )
    layout = Paths(tmp_path)
    params = {"source": str(corpus), "min_chars": 10, "max_chars": 10_000, "max_file_mb": 0.001}
    run_stage(ingest, {"ingest": params}, layout.root)
    reasons = {q["source"]: q["reason"] for q in map(json.loads, layout.quarantine.read_text().splitlines())}
    assert reasons["link.md"].endswith("a link to a file outside the corpus folder (not read)")
    assert (
        "oversized file (0.00" in reasons["big.md"]
        and "maximum 0.001 MB: ingest.max_file_mb" in reasons["big.md"]
    )
    assert "leaves the corpus" in reasons["batch.jsonl:4"]
    assert "not UTF-8" in reasons["qa.jsonl:4"]  # the file and the line
    assert "private file" not in pd.read_parquet(layout.documents)["text"].str.cat()
    assert list(pd.read_parquet(layout.qa)["id"]) == ["q1"]  # the other lines were still read
