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
