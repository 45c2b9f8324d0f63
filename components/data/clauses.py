"""Questions asked the way a reader asks them, made from a sentence's own clause without a model.

A declarative sentence `SUBJECT VERB REST` asks what the subject is or does: "The TIV contains
three or four inactivated viruses." asks "What does the TIV contain?", answered by the verbatim
"three or four inactivated viruses". With `subjects` it also asks what is or does the rest:
"Production of ROS leads to oxidative stress." asks "What leads to oxidative stress?", answered
by "Production of ROS".
Only a closed list of verbs is recognised (copulas and the verbs that carry findings in technical
and scientific prose), so no tagger or parser is needed. A sentence whose subject is a pronoun,
holds a comma or is longer than `MAX_SUBJECT_WORDS` gives nothing: its question would not name
what it asks about. Nor does a sentence cut by its chunk's window (not starting as a sentence
starts, or not ending with its full stop), nor an answer whose brackets do not close.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from components.data.cloze import sentences

MAX_SUBJECT_WORDS = 10
MAX_ANSWER_WORDS = 30
COPULAS = ("is", "are", "was", "were", "has been", "have been", "had been")
# verbs that carry findings, as lemmas (a particle travels with its verb: lead_to)
_VERB_LEMMAS = (
    "cause contain include require show suggest indicate reduce increase induce inhibit encode provide "
    "allow enable prevent affect produce infect activate block mediate regulate trigger promote determine "
    "reveal demonstrate confirm identify describe represent have return accept raise create define specify "
    "lead_to result_in bind_to consist_of apply_to"
)
_ACTION_VERBS = [lemma.replace("_", " ") for lemma in _VERB_LEMMAS.split()]
# the third person singular and past forms no rule makes
_IRREGULAR = {"lead": ("leads", "led"), "bind": ("binds", "bound"), "have": ("has", "had"),
              "identify": ("identifies", "identified"), "specify": ("specifies", "specified"),
              "apply": ("applies", "applied")}  # fmt: skip
# a subject never starts with a pronoun or with a word that fronts a clause or a phrase
_NOT_FIRST_WORDS = (
    "it this these those they we he she there that which here such our its their i you one both each what "
    "who if when while although because since as after before once unless in on at for to by with from "
    "during among of however thus whether"
)
_NOT_FIRST = set(_NOT_FIRST_WORDS.split())
# a subject holding one of these is a clause (modal, negation, existential), not a noun phrase
_CLAUSE_WORDS = (
    "there we they it can could may might will would should must also not only then that which who whom "
    "whose where"
)
_NOT_IN_SUBJECT = set(_CLAUSE_WORDS.split())
_DETERMINERS = {"The", "A", "An", "Most", "Many", "Some", "All", "Several", "Few", "Other", "Previous"}
_LABEL = re.compile(r"^(?:[A-Z][A-Za-z ]{0,24}:\s*)+")  # "Abstract:", "RESULTS:", "Text:"
_ADVERBS = {"also", "not", "then", "still", "further", "often", "usually", "commonly", "first"}
_CITATION_AT_END = re.compile(r"\s*\[[\d,\s–-]+\]$")
_CLAUSE_END = re.compile(r";|, (?:which|while|whereas|but|although|though|and thus|thus)\b| \(")
_PARTICIPLE = re.compile(
    r"^(?:\w+(?:ed|en|wn)|found|known|seen|made|done|held|led|bound|built|set|put|kept|run|sent|met|"
    r"lost|left|paid|told|brought|bought|caught|taught|meant|split|cut|spread|read|thought|sold|won)$"
)
_LIST_MARKER = re.compile(r"^(?:[-*+\u2022]|\d{1,2}[.)])\s+")  # "- item", "* item", "2. step"
# a whole sentence: it starts as one (capital, digit, code or quote) and ends with its full stop;
# a chunk's first and last sentences are often cut by the chunk's window
_WHOLE_SENTENCE = re.compile(r"^[\"'`(\[]?[A-Z0-9`].*[.!?][\"'`)\]]*$", re.DOTALL)
_NOT_IN_SUBJECT_CHARS = set("*#=<>|{}\u2014\u2013")  # emphasis, markup, dashes of an aside
_ASIDE = re.compile(r"\s-\s")  # "Do formatting for a record - if a formatter"
# a clause never ends on one of these: the sentence went on
_OPEN_END_WORDS = "the a an of to for as with and or by in on at from that than into its their"
_OPEN_END = set(_OPEN_END_WORDS.split())


@dataclass(frozen=True)
class Verb:
    """A recognised verb form: what it says, its lemma and the auxiliary that asks about its
    subject's action (None for a copula)."""

    form: str
    lemma: str
    auxiliary: str | None


def inflect(lemma: str) -> tuple[str, str]:
    """A lemma's third person singular and past forms ("lead to" -> "leads to", "led to")."""
    verb, _, particle = lemma.partition(" ")
    if verb in _IRREGULAR:
        singular, past = _IRREGULAR[verb]
    else:
        singular, past = f"{verb}s", f"{verb}d" if verb.endswith("e") else f"{verb}ed"
    return (f"{singular} {particle}".strip(), f"{past} {particle}".strip())


def _verb_forms() -> dict[str, Verb]:
    forms = {form: Verb(form, form, None) for form in COPULAS}
    for lemma in _ACTION_VERBS:
        singular, past = inflect(lemma)
        forms[singular] = Verb(singular, lemma, "does")
        forms[past] = Verb(past, lemma, "did")
        forms.setdefault(lemma, Verb(lemma, lemma, "do"))
    return forms


VERB_FORMS = _verb_forms()
_VERB = re.compile(r"\b(" + "|".join(sorted(map(re.escape, VERB_FORMS), key=len, reverse=True)) + r")\b")


def _balanced(text: str) -> bool:
    return (
        text.count("(") == text.count(")") and text.count("[") == text.count("]") and text.count("`") % 2 == 0
    )


def _subject_ok(subject: str) -> bool:
    words = subject.split()
    return (
        0 < len(words) <= MAX_SUBJECT_WORDS
        and "," not in subject
        and ":" not in subject
        and not _NOT_IN_SUBJECT_CHARS & set(subject)
        and not _ASIDE.search(subject)
        and _balanced(subject)
        and words[0].lower() not in _NOT_FIRST
        and words[-1] not in _DETERMINERS
        and words[-1] not in {"the", "a", "an"}
        and not _NOT_IN_SUBJECT & {w.lower() for w in words}
        and any(len(w) >= 3 and w.isalpha() for w in words)
    )


def _clause(rest: str) -> str:
    """The rest of the sentence up to where its clause ends, without the closing punctuation or a
    citation mark at its end."""
    clause = _CLAUSE_END.split(rest, maxsplit=1)[0].strip().rstrip(".!?:,").strip()
    return _CITATION_AT_END.sub("", clause)


def _starts_passive(words: list[str]) -> bool:
    """Whether a copula's rest starts with a participle ("was detected in", "were randomly
    allocated"): the subject is then what is asked about, never the rest."""
    words = [w.strip(",;.") for w in words]
    while len(words) > 1 and (words[0].endswith("ly") or words[0] in _ADVERBS):
        words = words[1:]
    return bool(words) and _PARTICIPLE.match(words[0]) is not None


def _in_question(subject: str) -> str:
    first, _, others = subject.partition(" ")
    return f"{first.lower()} {others}".strip() if first in _DETERMINERS else subject


def clause_questions(sentence: str, subjects: bool = False) -> list[tuple[str, str]]:
    """The (question, answer) pairs of one sentence from its first verb: the rest of its clause
    asked for and, with `subjects`, its subject too."""
    sentence = _LABEL.sub("", _LIST_MARKER.sub("", sentence.strip()))
    match = _VERB.search(sentence)
    if match is None or not _WHOLE_SENTENCE.match(sentence):
        return []
    subject, verb = sentence[: match.start()].strip(), VERB_FORMS[match.group(1)]
    rest = _clause(sentence[match.end() :])
    rest_words = rest.split()
    if not _subject_ok(subject) or not 1 <= len(rest_words) <= MAX_ANSWER_WORDS:
        return []
    if not _balanced(rest) or rest_words[-1].lower() in _OPEN_END:
        return []
    if verb.auxiliary == "do" and (not subject.endswith("s") or rest_words[0] == "of"):
        return []  # a bare lemma after a singular noun is a noun itself ("the leading cause of")
    if verb.auxiliary == "did" and rest_words[0].lower() in _OPEN_END:
        return []  # a past form before "by", "in", ... modifies a noun ("objects returned by open()")
    pairs = []
    # a participle after a copula or "have" is passive or perfect: only the subject can be asked for
    auxiliary_use = (verb.auxiliary is None or verb.lemma == "have") and _starts_passive(rest_words)
    if not auxiliary_use and not verb.form.endswith(" been"):
        ask = (
            f"What {verb.form} {_in_question(subject)}?"
            if verb.auxiliary is None
            else f"What {verb.auxiliary} {_in_question(subject)} {verb.lemma}?"
        )
        pairs.append((ask, rest))
    if subjects and len(rest_words) >= 2:
        asked = verb.form if verb.auxiliary != "do" else inflect(verb.lemma)[0]
        asked = {"are": "is", "were": "was", "have been": "has been"}.get(asked, asked)
        pairs.append((f"What {asked} {rest}?", subject))
    return pairs


def pick_clauses(
    text: str, per_chunk: int, rng: random.Random, subjects: bool = False
) -> list[tuple[str, str, str]]:
    """Up to `per_chunk` (sentence, question, answer) triples of a chunk, from different
    sentences where it has enough."""
    found = [[(s, q, a) for q, a in clause_questions(s, subjects)] for s in sentences(text)]
    found = [pairs for pairs in found if pairs]
    rng.shuffle(found)
    picked: list[tuple[str, str, str]] = []
    for depth in range(2):
        picked += [pairs[depth] for pairs in found if depth < len(pairs)]
    return picked[:per_chunk]
