import re

import pytest

from components.data.chunking import chunk_id, chunk_text


def words(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"\S+", text)]


TEXT = " ".join(f"w{i}" + ("." if i % 7 == 6 else "") for i in range(100))


def test_windows_respect_size_cover_everything_and_overlap() -> None:
    chunks = chunk_text("doc", TEXT, words, max_tokens=20, overlap=5)
    assert all(len(c.text.split()) <= 20 for c in chunks)
    seen = set(" ".join(c.text for c in chunks).split())
    assert seen == set(TEXT.split())
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert set(a.text.split()) & set(b.text.split()), "consecutive chunks share tokens"
    assert [c.position for c in chunks] == list(range(len(chunks)))


def test_windows_prefer_sentence_ends() -> None:
    chunks = chunk_text("doc", TEXT, words, max_tokens=20, overlap=0)
    assert all(c.text.endswith(".") for c in chunks[:-1])


def test_ids_are_stable_and_content_addressed() -> None:
    a = chunk_text("doc", TEXT, words, 20, 5)
    b = chunk_text("doc", TEXT, words, 20, 5)
    assert [c.chunk_id for c in a] == [c.chunk_id for c in b]
    assert a[0].chunk_id == chunk_id("doc", a[0].text)
    assert chunk_id("other", a[0].text) != a[0].chunk_id
    edited = chunk_text("doc", TEXT.replace("w90", "w9000"), words, 20, 5)
    assert a[0].chunk_id == edited[0].chunk_id
    changed = [e for e in edited if "w9000" in e.text]
    assert changed and all(c.chunk_id not in {x.chunk_id for x in a} for c in changed)


REPEATED = "Table one values are means.\n" * 12  # one 5-token window a line


def test_identical_windows_get_distinct_ids_that_an_earlier_edit_keeps() -> None:
    text = "Intro words come first here.\n" + REPEATED + "Closing words end the text."
    chunks = chunk_text("doc", text, words, max_tokens=5, overlap=0)
    repeated = [c for c in chunks if c.text == "Table one values are means."]
    assert len(repeated) == 12 and len({c.chunk_id for c in chunks}) == len(chunks)
    assert repeated[0].chunk_id == chunk_id("doc", repeated[0].text)  # the first keeps the plain id
    # a line inserted before the repeats shifts every position but no repeated window's id
    edited = chunk_text("doc", "A line added on top.\n" + text, words, 5, 0)
    assert [c.position for c in edited if c.text == repeated[0].text] == [c.position + 1 for c in repeated]
    assert [c.chunk_id for c in edited if c.text == repeated[0].text] == [c.chunk_id for c in repeated]


def test_chunks_keep_the_heading_path_of_their_section() -> None:
    text = (
        "Preamble " * 8
        + "\n\n# Title\n\nfirst words.\n\n## Methods\n\n"
        + "m " * 30
        + "\n## Results ##\n\nr r r."
    )
    chunks = chunk_text("doc", text, words, max_tokens=8, overlap=0)
    assert chunks[0].section == ""  # before any heading
    by_text = {c.text.split()[0]: c.section for c in chunks}
    assert by_text["#"] == "Title"
    assert by_text["m"] == "Title > Methods"
    assert chunks[-1].section == "Title > Results"
    for c in chunks:  # the span is where the chunk's text lies in the document
        assert text[c.start : c.end] == c.text


def test_chunks_know_their_page_and_the_outline_section_of_it() -> None:
    pages = ["alpha " * 12, "beta " * 12, "gamma " * 12]
    text, starts, at = "", [], 0
    for number, page in enumerate(pages, start=1):
        starts.append([at, number, f"Part {number}" if number > 1 else ""])
        text += page.strip() + "\n\n"
        at = len(text)
    chunks = chunk_text("doc", text.strip(), words, max_tokens=6, overlap=0, pages=starts)
    for c in chunks:
        assert c.page == {"alpha": 1, "beta": 2, "gamma": 3}[c.text.split()[0]]
        assert c.section == ("" if c.page == 1 else f"Part {c.page}")
        assert text[c.start : c.end] == c.text


SECTIONS = "# Bulletin\n\nIntro line.\n\n" + "".join(
    f"## Part {i}\n\nPart {i} is P/N {i}00 and its wear limit is {i}.5 mm.\n\n" for i in range(1, 5)
)  # 12 words a part section


def test_split_at_headings_packs_whole_sections_and_cuts_only_a_longer_one() -> None:
    plain = chunk_text("doc", SECTIONS, words, max_tokens=20, overlap=4)
    assert any(c.text.count("## Part") == 1 and not c.text.startswith("## Part") for c in plain)  # cut across
    chunks = chunk_text("doc", SECTIONS, words, max_tokens=20, overlap=4, split_at_headings=True)
    for i in range(1, 5):  # every part whole in exactly one window, with its number and its limit
        assert [c.text.count(f"P/N {i}00") for c in chunks].count(1) == 1
        assert any(f"## Part {i}" in c.text and f"{i}.5 mm." in c.text for c in chunks)
    assert all(c.text.startswith("#") for c in chunks)  # every window begins at a heading
    assert " ".join(c.text for c in chunks).split() == SECTIONS.split()  # no overlap across a heading
    packed = chunk_text("doc", SECTIONS, words, max_tokens=30, overlap=4, split_at_headings=True)
    assert [c.text.count("## Part") for c in packed] == [1, 2, 1]  # whole sections packed together
    long = "# Long\n\n" + TEXT + "\n\n## After\n\nend words."
    cut = chunk_text("doc", long, words, max_tokens=20, overlap=5, split_at_headings=True)
    assert max(len(c.text.split()) for c in cut) <= 20 and cut[-1].text == "## After\n\nend words."
    assert set(cut[1].text.split()) & set(cut[2].text.split())  # a long section keeps its overlap


def test_bad_window_is_refused() -> None:
    with pytest.raises(ValueError):
        chunk_text("doc", TEXT, words, max_tokens=5, overlap=5)


def test_tokenizer_json_gives_the_transformers_offsets_past_the_model_window() -> None:
    from transformers import AutoTokenizer

    from components.data.chunking import load_offsets, tokenizer_offsets
    from components.embed.encoder import resolve_embedder

    name = resolve_embedder("all-MiniLM-L6-v2")  # its tokenizer.json truncates and pads to 128
    text = "Ünïcødé café, naïve 東京\tand  spaces.\n\n" + " ".join(
        f"term{i} of the record." for i in range(300)
    )
    fast = load_offsets(name)(text)
    assert len(fast) > 600
    assert fast == tokenizer_offsets(AutoTokenizer.from_pretrained(name))(text)
