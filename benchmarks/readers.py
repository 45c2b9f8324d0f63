"""Ingest throughput of each document format, through the readers ingest uses.

    .venv/bin/python -m benchmarks.readers [--copies N] [--html-folder DIR]

Writes the fixture documents of tests/fixtures/documents.py (a 3-page PDF with an outline, two
columns and a table; a scanned one-page PDF read by OCR; a DOCX; an HTML page with navigation)
N times each, reads them with ingest's `read_documents` and prints pages/s per format. With
--html-folder (e.g. /usr/share/doc/python3.11/html/library) it also reads those real HTML files.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from components.data.corpus import read_documents
from components.data.readers import ReadOptions, ocr_available
from tests.fixtures.documents import contract_docx, guideline_pdf, intranet_html, scanned_pdf

WRITERS = {"guideline.pdf": guideline_pdf, "contract.docx": contract_docx, "intranet.html": intranet_html}


def fixture_folder(folder: Path, copies: int) -> Path:
    """`copies` of each fixture document; the scanned PDF in its own folder (it is far slower)."""
    docs, scans = folder / "docs", folder / "scans"
    docs.mkdir(parents=True)
    scans.mkdir()
    for name, write in WRITERS.items():
        write(docs / name)
        for i in range(1, copies):
            shutil.copy(docs / name, docs / f"{Path(name).stem}-{i}{Path(name).suffix}")
    scanned_pdf(scans / "scanned.pdf")
    for i in range(1, max(1, copies // 10)):
        shutil.copy(scans / "scanned.pdf", scans / f"scanned-{i}.pdf")
    return folder


def throughput(folder: Path, label: str) -> list[tuple[str, int, int, float]]:
    stats: dict[str, dict] = {}
    documents = read_documents(folder, "v1", ReadOptions(ocr="auto"), stats)
    failed = [d for d in documents if d.error]
    if failed:
        raise SystemExit(f"{len(failed)} documents failed: {failed[0].error}")
    return [
        (f"{label} {suffix}", s["files"], s["pages"], s["pages"] / s["seconds"])
        for suffix, s in stats.items()
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--html-folder", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = fixture_folder(Path(tmp), args.copies)
        rows += throughput(folder / "docs", "fixtures")
        if ocr_available():
            rows += throughput(folder / "scans", "fixtures, OCR")
    if args.html_folder:
        rows += throughput(args.html_folder, args.html_folder.name)
    print("| documents | files | pages | pages/s |\n|---|---:|---:|---:|")
    for label, files, pages, rate in rows:
        print(f"| {label} | {files} | {pages} | {rate:.1f} |")


if __name__ == "__main__":
    main()
