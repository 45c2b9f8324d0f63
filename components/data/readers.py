"""Readers for document formats, chosen by file suffix through a registry.

Each reader turns a file's bytes into plain text with markdown headings (`#` lines, so chunks
know their section) and, for paged formats, where each page starts. A file that cannot be read
raises `Unreadable` with the reason, which ingest writes to the quarantine file.

- .pdf, pypdfium2 (PDFium): text per page in reading order, table rows as lines, the outline
  (bookmarks) as sections; pages without a text layer through tesseract-ocr (`ingest.ocr`).
- .docx, python-docx: paragraphs and tables in document order, Heading styles as sections.
- .html / .htm, trafilatura: the main text without navigation, scripts, headers and footers;
  headings and tables kept.
- .md, .txt: as written. (.jsonl documents are read by components/data/corpus.py.)
"""

from __future__ import annotations

import html
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path


class Unreadable(ValueError):
    """A document that cannot be read; the message is its quarantine reason."""


@dataclass
class ReadOptions:
    """Reader settings from the `ingest` params section."""

    ocr: str = "auto"  # auto | off
    max_file_mb: float = 100.0  # larger files are quarantined before they are read


@dataclass
class ReadResult:
    """A document's text and, for paged formats, `pages`: [start character, page number (1-based),
    outline section] for each page, in order."""

    text: str
    pages: list[list] = field(default_factory=list)
    ocr_pages: int = 0

    def metadata(self) -> dict:
        """Page counts to store beside the text (empty for formats without pages)."""
        meta: dict = {"pages": self.pages} if self.pages else {}
        return meta | ({"ocr_pages": self.ocr_pages} if self.ocr_pages else {})


Reader = Callable[[bytes, ReadOptions], ReadResult]
READERS: dict[str, Reader] = {}


def register_reader(*suffixes: str) -> Callable[[Reader], Reader]:
    """Register a reader for file suffixes (lower case, with the dot)."""

    def add(reader: Reader) -> Reader:
        for suffix in suffixes:
            READERS[suffix] = reader
        return reader

    return add


def read_file(path: Path, options: ReadOptions) -> ReadResult:
    """The text of one file by its suffix; Unreadable with the reason when it cannot be read."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise Unreadable(f"unsupported file type {path.suffix.lower() or '(none)'}")
    return reader(path.read_bytes(), options)


def decode_utf8(raw: bytes) -> str:
    """Decode UTF-8 bytes; anything else raises a quarantinable error naming the byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"undecodable: not UTF-8 ({exc.reason} at byte {exc.start})") from None


@register_reader(".md", ".markdown", ".txt")
def read_plain(raw: bytes, options: ReadOptions) -> ReadResult:
    """Reader for plain text and Markdown."""
    return ReadResult(decode_utf8(raw))


@register_reader(".html", ".htm")
def read_html(raw: bytes, options: ReadOptions) -> ReadResult:
    """Main text as markdown (headings as `#` lines, tables as rows) without boilerplate."""
    import trafilatura

    markup = decode_utf8(raw)
    text = trafilatura.extract(
        markup, output_format="markdown", include_tables=True, include_links=False,
        include_comments=False, include_images=False, favor_recall=True, deduplicate=False,
    )  # fmt: skip
    if not text:  # a page too short for boilerplate detection: every visible text node
        text = html_to_text(markup)
    return ReadResult(text.replace("¶", ""))


@register_reader(".docx")
def read_docx(raw: bytes, options: ReadOptions) -> ReadResult:
    """Paragraphs and tables in document order; `Heading N` and `Title` styles become headings."""
    import io
    import zipfile

    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(raw))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise Unreadable(f"corrupt DOCX: {exc}") from None
    lines = []
    for block in document.element.body.iterchildren():
        tag = block.tag.rsplit("}", 1)[-1]
        if tag == "p":
            lines.append(_docx_paragraph(Paragraph(block, document)))
        elif tag == "tbl":
            table = Table(block, document)
            lines += [" | ".join(cell.text.strip() for cell in row.cells) for row in table.rows]
    return ReadResult("\n\n".join(line for line in lines if line.strip()))


def _docx_paragraph(paragraph) -> str:  # noqa: ANN001
    style = (paragraph.style.name if paragraph.style is not None else "") or ""
    text = paragraph.text.strip()
    if style == "Title":
        return f"# {text}"
    if style.startswith("Heading") and style.split()[-1].isdigit():
        return f"{'#' * min(6, int(style.split()[-1]) + 1)} {text}"
    return text


@register_reader(".pdf")
def read_pdf(raw: bytes, options: ReadOptions) -> ReadResult:
    """Per-page text in PDFium's reading order; pages without a text layer are OCR'd when
    `options.ocr` is auto and tesseract is installed."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(raw)
    except pdfium.PdfiumError as exc:
        message = str(exc)
        if "password" in message.lower():
            raise Unreadable("encrypted PDF (a password is needed)") from None
        raise Unreadable(f"corrupt PDF: {message}") from None
    try:
        if len(pdf) == 0:
            raise Unreadable("empty PDF: no pages")
        outline = _outline(pdf)
        texts, ocr_pages, scanned = [], 0, 0
        for number in range(len(pdf)):
            page = pdf[number]
            text = page.get_textpage().get_text_range().replace("\r\n", "\n").replace("\r", "\n")
            if not text.strip() and _has_images(page):
                scanned += 1
                if options.ocr == "auto" and ocr_available():
                    text, ocr_pages = _ocr(page), ocr_pages + 1
            texts.append(text.strip())
    finally:
        pdf.close()
    if not any(texts):
        if scanned:
            raise Unreadable("no text layer (OCR off or not installed)")
        raise Unreadable("empty PDF: no text on any page")
    return _joined_pages(texts, outline, ocr_pages)


def _joined_pages(texts: list[str], outline: list[tuple[int, str]], ocr_pages: int) -> ReadResult:
    parts, pages, at = [], [], 0
    for number, text in enumerate(texts, start=1):
        if not text:
            continue
        section = next((title for page, title in reversed(outline) if page <= number), "")
        pages.append([at, number, section])
        parts.append(text)
        at += len(text) + 2
    return ReadResult("\n\n".join(parts), pages, ocr_pages)


def _outline(pdf) -> list[tuple[int, str]]:  # noqa: ANN001
    """(1-based page, heading path) of each outline (bookmark) entry, in page order."""
    entries, path = [], []
    try:
        for item in pdf.get_toc():
            dest = item.get_dest()
            index = dest.get_index() if dest is not None else None
            path = path[: item.level] + [item.get_title().strip()]
            if index is not None:
                entries.append((index + 1, " > ".join(path)))
    except Exception:  # noqa: BLE001 - a broken outline costs the sections, not the document
        return []
    return sorted(entries, key=lambda e: e[0])


def _has_images(page) -> bool:  # noqa: ANN001
    import pypdfium2.raw as pdfium_c

    return any(obj.type == pdfium_c.FPDF_PAGEOBJ_IMAGE for obj in page.get_objects())


def ocr_available() -> bool:
    """Whether the tesseract binary (Debian: tesseract-ocr) is on the PATH."""
    return shutil.which("tesseract") is not None


def _ocr(page, scale: float = 300 / 72) -> str:  # noqa: ANN001
    import pytesseract

    image = page.render(scale=scale).to_pil()
    return pytesseract.image_to_string(image)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs) -> None:  # noqa: ANN001
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("p", "br", "div", "li", "h1", "h2", "h3", "h4", "tr"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML page, without scripts and styles, with line breaks at block tags."""
    parser = _TextExtractor()
    parser.feed(markup)
    return html.unescape("".join(parser.parts))
