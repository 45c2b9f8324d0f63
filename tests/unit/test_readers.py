"""Readers for real formats, on documents written in the test (tests/fixtures/documents.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.data.ingest import ingest_corpus
from components.data.readers import ReadOptions, Unreadable, ocr_available, read_file
from tests.fixtures.documents import (
    COLUMN_LEFT,
    COLUMN_RIGHT,
    FACTS,
    MALFORMED,
    write_document_corpus,
)

needs_ocr = pytest.mark.skipif(not ocr_available(), reason="needs tesseract-ocr (.ci/run installs it)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_document_corpus(tmp_path_factory.mktemp("documents"))


def read(corpus: Path, name: str, ocr: str = "auto") -> str:
    return read_file(corpus / "docs" / name, ReadOptions(ocr=ocr)).text


def test_pdf_pages_keep_reading_order_tables_and_the_outline(corpus: Path) -> None:
    result = read_file(corpus / "docs" / "guideline.pdf", ReadOptions())
    assert [p[1] for p in result.pages] == [1, 2, 3]
    assert [p[2] for p in result.pages] == ["Velorane guideline", "Field notes", "Dosage table"]
    text = result.text
    assert FACTS["guideline"][1] in text
    assert text.index(COLUMN_LEFT) < text.index(COLUMN_RIGHT)  # left column first, not interleaved
    assert "velorane 40 mg" in text.splitlines()  # a table row stays one line
    second = text[result.pages[1][0] : result.pages[2][0]]
    assert COLUMN_LEFT in second and "velorane" not in second  # page offsets point at their page


def test_docx_keeps_headings_as_sections_and_tables_as_rows(corpus: Path) -> None:
    text = read(corpus, "contract.docx")
    assert text.startswith("# Halvard supply agreement")
    assert "## Disputes" in text and FACTS["contract"][1] in text
    assert "pump | 1200 EUR" in text


def test_html_drops_navigation_scripts_and_footer(corpus: Path) -> None:
    text = read(corpus, "intranet.html")
    assert "## Network" in text and FACTS["intranet"][1] in text
    for boilerplate in ("Navigation link", "navigation script", "color: red", "Copyright footer"):
        assert boilerplate not in text


@needs_ocr
def test_scanned_pdf_is_read_by_ocr_only_when_allowed(corpus: Path) -> None:
    result = read_file(corpus / "docs" / "scanned.pdf", ReadOptions(ocr="auto"))
    assert FACTS["scanned"][1] in result.text and result.ocr_pages == 1
    with pytest.raises(Unreadable, match="no text layer"):
        read_file(corpus / "docs" / "scanned.pdf", ReadOptions(ocr="off"))


def test_malformed_files_are_quarantined_with_their_reason_and_the_rest_is_read(corpus: Path) -> None:
    ingested = ingest_corpus(corpus, min_chars=20, max_chars=200_000, options=ReadOptions())
    reasons = {Path(q["source"]).name: q["reason"] for q in ingested.quarantined}
    for name, reason in MALFORMED.items():
        assert reason in reasons[name], reasons
    expected = {"guideline", "contract", "intranet"} | ({"scanned"} if ocr_available() else set())
    assert set(ingested.documents["doc_id"]) == expected
    formats = ingested.summary()["formats"]
    assert formats[".pdf"]["files"] == 5 and formats[".pdf"]["pages"] >= 3
    assert formats[".html"]["pages_per_s"] > 0
