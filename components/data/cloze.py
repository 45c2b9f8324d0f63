"""Answer spans found in text without a model, and the model-free questions made from them.

A span is a number (with its unit), an identifier or code name (`os.path.join`, `SARS-CoV-2`,
`__init__`) or a capitalised name that does not start its sentence: the things a reader looks
up in domain documents. A cloze question is the sentence with one span blanked out, asked back;
the span is its answer. A topic question asks what the text says about a name or code; the
sentence that states it is the answer. Every answer is a verbatim piece of its chunk.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

BLANK = "____"
CLOZE_PREFIX = "Fill in the blank: "

_UNIT = (
    r"%|percent|days?|weeks?|months?|years?|hours?|minutes?|seconds?|patients?|cases?|people|"
    r"mg|g|kg|ml|mL|l|nm|µm|mm|cm|m|km|kb|bp|kDa|°C|mmHg|fold|times|bytes?|bits?|MB|GB"
)
_PATTERNS = {
    "number": rf"(?<![\w.\[-])\d+(?:[.,]\d+)*(?:\s?(?:{_UNIT})\b|%|(?![\w\]-]))",
    "identifier": r"(?<![\w.])[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)+(?:\(\))?|\b\w+\(\)|\b_*[a-z]+_\w+\b",
    "code": r"(?<![\w-])(?=[A-Za-z0-9-]*[A-Z][A-Za-z0-9-]*[A-Z0-9])[A-Z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*\b",
    "name": r"(?<=[a-z,;:(] )[A-Z][a-z]+(?:\s+(?:of|and|for|de|van|von)?\s*[A-Z][a-z]+)+",
}
SPAN = re.compile("|".join(f"(?P<{kind}>{pattern})" for kind, pattern in _PATTERNS.items()))
# a sentence ends at its full stop, at a blank line, or where a line starts a list item or a
# heading; a single line break inside a paragraph (hard-wrapped text) is only a space
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\[\"'`])|\n\s*\n\s*|\n(?=\s*(?:[-*+#]|\d{1,2}[.)]\s))")


@dataclass(frozen=True)
class Span:
    """A candidate answer inside a sentence: its text, kind and character offsets in it."""

    text: str
    kind: str
    start: int
    end: int


def sentences(text: str, min_words: int = 6, max_words: int = 60) -> list[str]:
    """The sentences of a chunk with between `min_words` and `max_words` words, each on one line
    (the line breaks of hard-wrapped text become spaces)."""
    parts = (" ".join(s.split()) for s in _SENTENCE_END.split(text))
    return [s for s in parts if min_words <= len(s.split()) <= max_words]


def answer_spans(sentence: str) -> list[Span]:
    """Candidate answers in `sentence`; a bare one-digit number or a span that is most of the
    sentence is left out (neither makes a question worth asking)."""
    spans = []
    for match in SPAN.finditer(sentence):
        text, kind = match.group(0).strip(), match.lastgroup or "span"
        if kind == "number" and len(text) < 2:
            continue
        if len(text) > len(sentence) / 2:
            continue
        spans.append(Span(text, kind, match.start(), match.start() + len(text)))
    return spans


def cloze(sentence: str, span: Span) -> str:
    """The question that asks `span` back: the sentence with the span blanked."""
    return f"{CLOZE_PREFIX}{sentence[: span.start]}{BLANK}{sentence[span.end :]}"


def topic_question(topic: str) -> str:
    """A question about a name, code or identifier whose answer is the sentence that states it."""
    return f"What does the text say about {topic}?"


def pick_spans(text: str, per_chunk: int, rng: random.Random) -> list[tuple[str, Span]]:
    """Up to `per_chunk` (sentence, span) pairs of a chunk, from different sentences, preferring
    spans that occur once in the sentence (a blank that is still visible elsewhere is no question)."""
    found = []
    for sentence in sentences(text):
        unique = [s for s in answer_spans(sentence) if sentence.count(s.text) == 1]
        if unique:
            found.append((sentence, rng.choice(unique)))
    rng.shuffle(found)
    return found[:per_chunk]
