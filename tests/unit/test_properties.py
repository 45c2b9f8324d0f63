"""Property tests (hypothesis): whatever bytes a reader gets, it reads them or refuses with a
reason; chunks have unique ids and cover every word of the text; any `-S` override is applied or
refused with a ParamsError naming it, and a refused one leaves params.yaml byte-identical."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.core.config import ParamsError, apply_overrides
from components.core.params import parse_params
from components.data.chunking import chunk_text
from components.data.readers import READERS, ReadOptions, Unreadable, read_file

ROOT = Path(__file__).resolve().parents[2]
QUICK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
ODD_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"])
    | st.sampled_from(["\u200f", "\u202e", "\x00"]),
    max_size=400,
)


@QUICK
@given(
    suffix=st.sampled_from(sorted(READERS)),
    raw=st.one_of(
        st.binary(max_size=2048),
        ODD_TEXT.map(lambda t: t.encode("utf-8")),
        st.sampled_from([b"%PDF-1.4\n%%EOF", b"PK\x03\x04" + b"\x00" * 40, b"<html><body>", b"\xff\xfe\x00"]),
    ),
)
def test_a_reader_reads_or_refuses_with_a_reason(suffix: str, raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"doc{suffix}"
        path.write_bytes(raw)
        try:
            result = read_file(path, ReadOptions(ocr="off"))
        except Unreadable as exc:
            assert str(exc)  # a reason a person can read
            return
        assert isinstance(result.text, str)


def words(text: str) -> list[tuple[int, int]]:
    """Whitespace tokens as (start, end) spans: a stand-in tokenizer that is fast and exact."""
    return [m.span() for m in re.finditer(r"\S+", text)]


@QUICK
@given(
    text=st.lists(
        st.one_of(st.sampled_from(["# Title", "## Part", "Dose is 10 mg.", "\n", "\n\n"]), ODD_TEXT),
        max_size=40,
    ).map(" ".join),
    max_tokens=st.integers(8, 40),
    overlap=st.integers(0, 7),
    headings=st.booleans(),
)
def test_chunks_have_unique_ids_and_cover_the_text(
    text: str, max_tokens: int, overlap: int, headings: bool
) -> None:
    chunks = chunk_text("doc", text, words, max_tokens, overlap, split_at_headings=headings)
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    covered = [False] * len(text)
    for c in chunks:
        assert text[c.start : c.end].strip() == c.text.strip() or c.text.strip() in text
        for i in range(c.start, c.end):
            covered[i] = True
    for start, end in words(text):
        assert all(covered[start:end]), f"word {text[start:end]!r} is in no chunk"


KEYS = [
    "model.seed",
    "retrieval.k",
    "adapter-train.lr",
    "serve.max_new_tokens",
    "ingest.ocr",
    "chunk.overlap",
]


@QUICK
@given(
    key=st.one_of(st.sampled_from(KEYS), st.text(max_size=30)),
    value=st.one_of(
        st.integers(-5, 10**6), st.floats(allow_nan=True), st.text(max_size=20), st.just("[1, {a: b}]")
    ),
)
def test_an_override_is_applied_or_refused_with_the_file_unchanged(key: str, value: object) -> None:
    with tempfile.TemporaryDirectory() as folder:
        params = Path(folder) / "params.yaml"
        shutil.copy(ROOT / "params.yaml", params)
        before = params.read_bytes()
        try:
            apply_overrides(params, [f"{key}={value}"], check=parse_params)
        except ParamsError as exc:
            assert str(exc)
            assert params.read_bytes() == before
