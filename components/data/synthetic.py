"""Deterministic synthetic knowledge bases of fictional entities for demos, tests and benchmarks.

Every entity, name and value is invented from a seeded generator, so no answer can be known
without reading the documents. A corpus can have versions (a share of facts change, documents
are added and removed) or be a sequence of tasks (each task adds entities of another domain and
revises some earlier facts).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

SYLLABLES = [
    "ka",
    "lo",
    "mir",
    "zen",
    "tha",
    "vor",
    "qui",
    "bel",
    "dra",
    "nox",
    "sel",
    "ur",
    "fen",
    "gal",
    "or",
    "pex",
    "ri",
    "tul",
    "yam",
    "cor",
    "vel",
    "ish",
    "mon",
    "tar",
    "eb",
    "sul",
]
CITIES = ["Varnholt", "Quessel", "Dunmere", "Orravik", "Pellast", "Tirwen", "Calbrook", "Meswick"]
MONTHS = ["January", "March", "April", "June", "August", "September", "October", "December"]


def _word(rng: random.Random, parts: int = 3) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def _person(rng: random.Random) -> str:
    return f"{_word(rng, 2)} {_word(rng, 3)}"


# value makers: each returns a fresh fictional value
VALUE_MAKERS = {
    "dose": lambda r: f"{r.randrange(5, 95) * 10} mg",
    "hours": lambda r: f"{r.randrange(2, 72)} hours",
    "year": lambda r: str(r.randrange(1961, 2039)),
    "person": _person,
    "company": lambda r: f"{_word(r)} {r.choice(['Labs', 'Pharma', 'Systems', 'Group', 'Works'])}",
    "disease": lambda r: f"{_word(r, 2)} {r.choice(['syndrome', 'fever', 'disorder'])}",
    "section": lambda r: f"Section {r.randrange(2, 40)}.{r.randrange(1, 12)}",
    "money": lambda r: f"{r.randrange(2, 900)} thousand crowns",
    "days": lambda r: f"{r.randrange(5, 120)} days",
    "city": lambda r: r.choice(CITIES),
    "ticker": lambda r: "".join(r.choice("BCDFGHKLMNPQRSTVXZ") for _ in range(4)),
    "percent": lambda r: f"{r.randrange(2, 60)}.{r.randrange(0, 10)} percent",
    "month": lambda r: r.choice(MONTHS),
    "temperature": lambda r: f"{r.randrange(-80, 400)} degrees Celsius",
    "code": lambda r: f"{_word(r, 1).upper()}-{r.randrange(100, 999)}",
    "team": lambda r: f"the {_word(r, 2)} team",
}


@dataclass(frozen=True)
class Attribute:
    """One kind of fact: how it reads in a document and how it is asked."""

    name: str
    value: str
    statements: tuple[str, ...]
    questions: tuple[str, ...]


@dataclass(frozen=True)
class Domain:
    """A synthetic knowledge domain: its kind of entity, intro sentence and attributes."""

    name: str
    kind: str
    intro: str
    attributes: tuple[Attribute, ...]


A = Attribute
DOMAINS: tuple[Domain, ...] = (
    Domain(
        "medicine",
        "drug",
        "{e} is an investigational drug described in the clinical formulary.",
        (
            A(
                "max_dose",
                "dose",
                ("The maximum daily dose of {e} is {v}.", "Clinicians must not exceed {v} of {e} per day."),
                (
                    "What is the maximum daily dose of {e}?",
                    "How much {e} may a patient take per day at most?",
                ),
            ),
            A(
                "indication",
                "disease",
                ("{e} is indicated for {v}.", "The primary indication of {e} is {v}."),
                ("What condition is {e} indicated for?", "What is the primary indication of {e}?"),
            ),
            A(
                "maker",
                "company",
                ("{e} is manufactured by {v}.", "The manufacturer of {e} is {v}."),
                ("Who manufactures {e}?", "Which company makes {e}?"),
            ),
            A(
                "half_life",
                "hours",
                ("The elimination half-life of {e} is {v}.", "{e} has a half-life of {v}."),
                ("What is the half-life of {e}?", "How long is the elimination half-life of {e}?"),
            ),
        ),
    ),
    Domain(
        "law",
        "statute",
        "The {e} Act is a statute recorded in the regional legal register.",
        (
            A(
                "enacted",
                "year",
                ("The {e} Act was enacted in {v}.", "Parliament passed the {e} Act in {v}."),
                ("In what year was the {e} Act enacted?", "When was the {e} Act passed?"),
            ),
            A(
                "penalty",
                "money",
                (
                    "Violations of the {e} Act carry a fine of up to {v}.",
                    "The maximum fine under the {e} Act is {v}.",
                ),
                (
                    "What is the maximum fine under the {e} Act?",
                    "How large a fine can a violation of the {e} Act bring?",
                ),
            ),
            A(
                "filing_section",
                "section",
                (
                    "Filing duties under the {e} Act are set out in {v}.",
                    "{v} of the {e} Act governs filing duties.",
                ),
                (
                    "Which section of the {e} Act sets out filing duties?",
                    "Where in the {e} Act are filing duties defined?",
                ),
            ),
            A(
                "deadline",
                "days",
                (
                    "Appeals under the {e} Act must be lodged within {v}.",
                    "The appeal window of the {e} Act is {v}.",
                ),
                (
                    "How long is the appeal window under the {e} Act?",
                    "Within how many days must an appeal under the {e} Act be lodged?",
                ),
            ),
        ),
    ),
    Domain(
        "finance",
        "company",
        "{e} Holdings is a listed company covered by the market digest.",
        (
            A(
                "ceo",
                "person",
                ("The chief executive of {e} Holdings is {v}.", "{e} Holdings is led by CEO {v}."),
                ("Who is the CEO of {e} Holdings?", "Who leads {e} Holdings as chief executive?"),
            ),
            A(
                "ticker",
                "ticker",
                ("{e} Holdings trades under the ticker {v}.", "The ticker symbol of {e} Holdings is {v}."),
                ("What is the ticker symbol of {e} Holdings?", "Under which ticker does {e} Holdings trade?"),
            ),
            A(
                "hq",
                "city",
                ("{e} Holdings is headquartered in {v}.", "The head office of {e} Holdings is in {v}."),
                ("Where is {e} Holdings headquartered?", "In which city is the head office of {e} Holdings?"),
            ),
            A(
                "margin",
                "percent",
                (
                    "{e} Holdings reported an operating margin of {v}.",
                    "The operating margin of {e} Holdings was {v}.",
                ),
                (
                    "What operating margin did {e} Holdings report?",
                    "What was the operating margin of {e} Holdings?",
                ),
            ),
        ),
    ),
    Domain(
        "science",
        "compound",
        "{e}ite is a compound catalogued by the materials survey.",
        (
            A(
                "melting",
                "temperature",
                ("{e}ite melts at {v}.", "The melting point of {e}ite is {v}."),
                ("What is the melting point of {e}ite?", "At what temperature does {e}ite melt?"),
            ),
            A(
                "discoverer",
                "person",
                ("{e}ite was first synthesised by {v}.", "The discoverer of {e}ite is {v}."),
                ("Who first synthesised {e}ite?", "Who discovered {e}ite?"),
            ),
            A(
                "discovered",
                "year",
                ("{e}ite was discovered in {v}.", "The first sample of {e}ite dates from {v}."),
                ("In what year was {e}ite discovered?", "When was {e}ite first found?"),
            ),
            A(
                "lab",
                "city",
                ("Reference samples of {e}ite are kept in {v}.", "The {e}ite reference lab is in {v}."),
                ("Where are reference samples of {e}ite kept?", "In which city is the {e}ite reference lab?"),
            ),
        ),
    ),
    Domain(
        "enterprise",
        "procedure",
        "The {e} procedure is part of the internal operations handbook.",
        (
            A(
                "owner",
                "team",
                ("The {e} procedure is owned by {v}.", "{v} owns the {e} procedure."),
                ("Which team owns the {e} procedure?", "Who is the owner of the {e} procedure?"),
            ),
            A(
                "sla",
                "hours",
                (
                    "Requests under the {e} procedure must be resolved within {v}.",
                    "The {e} procedure has a resolution target of {v}.",
                ),
                (
                    "What is the resolution target of the {e} procedure?",
                    "Within how long must {e} requests be resolved?",
                ),
            ),
            A(
                "form",
                "code",
                (
                    "The {e} procedure starts with form {v}.",
                    "Staff open form {v} to begin the {e} procedure.",
                ),
                (
                    "Which form starts the {e} procedure?",
                    "What form do staff open to begin the {e} procedure?",
                ),
            ),
            A(
                "review",
                "month",
                ("The {e} procedure is reviewed every {v}.", "Each {v} the {e} procedure is reviewed."),
                (
                    "In which month is the {e} procedure reviewed?",
                    "When is the {e} procedure reviewed each year?",
                ),
            ),
        ),
    ),
)
DOMAIN_BY_NAME = {d.name: d for d in DOMAINS}


@dataclass
class Entity:
    """One synthetic entity with its facts (one document)."""

    domain: str
    name: str
    facts: dict[str, str]
    phrasing: dict[str, int] = field(default_factory=dict)

    @property
    def doc_id(self) -> str:
        """The entity's document id, `domain/name`."""
        return f"{self.domain}/{self.name.lower()}"


def _stable_unit(text: str) -> float:
    """A number in [0, 1) fixed by the text (used for splits that never move between versions)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32


class KnowledgeBase:
    """Generates entities and evolves them across versions, all from one seed."""

    def __init__(self, seed: int = 0, test_share: float = 0.3) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.test_share = test_share
        self.entities: dict[str, Entity] = {}
        self._names: set[str] = set()

    def _new_name(self) -> str:
        tries = 0
        while True:
            # names grow a syllable once the short ones are nearly used up (large corpora)
            name = _word(self.rng, self.rng.choice([2, 3]) + tries // 50)
            if name not in self._names:
                return name
            tries += 1

    def add_entities(self, domain: str, count: int) -> list[Entity]:
        """Invent `count` new entities of `domain` with fresh names and facts."""
        spec = DOMAIN_BY_NAME[domain]
        added = []
        for _ in range(count):
            entity = Entity(domain, self._new_name(), {})
            for attr in spec.attributes:
                entity.facts[attr.name] = VALUE_MAKERS[attr.value](self.rng)
                entity.phrasing[attr.name] = self.rng.randrange(len(attr.statements))
            self.entities[entity.doc_id] = entity
            self._names.add(entity.name)
            added.append(entity)
        return added

    def fact_count(self) -> int:
        """Number of facts over all entities."""
        return sum(len(e.facts) for e in self.entities.values())

    def revise(self, count: int) -> list[tuple[str, str]]:
        """Change `count` facts to new values; returns the (doc_id, attribute) pairs changed."""
        keys = [(d, a) for d, e in sorted(self.entities.items()) for a in e.facts]
        changed = self.rng.sample(keys, k=min(count, len(keys)))
        for doc_id, attr in changed:
            entity = self.entities[doc_id]
            spec = next(a for a in DOMAIN_BY_NAME[entity.domain].attributes if a.name == attr)
            old = entity.facts[attr]
            while entity.facts[attr] == old:
                entity.facts[attr] = VALUE_MAKERS[spec.value](self.rng)
        return changed

    def remove(self, count: int) -> list[str]:
        """Remove `count` random entities; returns their document ids."""
        removed = self.rng.sample(sorted(self.entities), k=min(count, len(self.entities)))
        for doc_id in removed:
            self._names.discard(self.entities.pop(doc_id).name)
        return removed

    def document(self, entity: Entity) -> str:
        """The Markdown document describing `entity`."""
        spec = DOMAIN_BY_NAME[entity.domain]
        lines = [f"# {entity.name}", "", spec.intro.format(e=entity.name), ""]
        for attr in spec.attributes:
            template = attr.statements[entity.phrasing[attr.name]]
            lines.append(template.format(e=entity.name, v=entity.facts[attr.name]))
        return "\n".join(lines) + "\n"

    def qa(self) -> list[dict[str, str]]:
        """One question per fact, with its answer and document id."""
        items = []
        for doc_id, entity in sorted(self.entities.items()):
            for attr in DOMAIN_BY_NAME[entity.domain].attributes:
                qid = f"{doc_id}#{attr.name}"
                # the question phrasing differs from the document's statement where possible
                question = attr.questions[_stable_unit(qid + "q") < 0.5]
                split = "test" if _stable_unit(f"{self.seed}:{qid}") < self.test_share else "train"
                items.append(
                    {
                        "id": qid,
                        "question": question.format(e=entity.name),
                        "answer": entity.facts[attr.name],
                        "doc_id": doc_id,
                        "split": split,
                    }
                )
        return items

    def write(self, folder: Path) -> None:
        """Write the documents and qa.jsonl of the current state to `folder`."""
        docs = folder / "docs"
        docs.mkdir(parents=True, exist_ok=True)
        for entity in self.entities.values():
            path = docs / f"{entity.doc_id}.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.document(entity))
        with (folder / "qa.jsonl").open("w") as fh:
            for item in self.qa():
                fh.write(json.dumps(item) + "\n")


def heldout_question(item: dict[str, str]) -> str | None:
    """The other phrasing of a generated question (`qa()` asks each fact with one of its
    attribute's two phrasings): a question about the same fact in words never trained on, or
    None when the item is not one of ours or its attribute has one phrasing only."""
    doc_id, _, attr_name = item["id"].partition("#")
    domain = DOMAIN_BY_NAME.get(doc_id.split("/", 1)[0])
    attr = next((a for a in domain.attributes if a.name == attr_name), None) if domain else None
    lowered = doc_id.split("/", 1)[-1]
    start = item["question"].lower().find(lowered)
    if attr is None or len(attr.questions) < 2 or start < 0:
        return None
    name = item["question"][start : start + len(lowered)]
    others = [q.format(e=name) for q in attr.questions if q.format(e=name) != item["question"]]
    return others[0] if others else None


def passages(count: int, seed: int = 0) -> list[dict[str, str]]:
    """`count` one-fact passages (chunk-sized) over all domains, for large retrieval corpora."""
    kb = KnowledgeBase(seed=seed)
    out: list[dict[str, str]] = []
    while len(out) < count:
        for domain in DOMAINS:
            for entity in kb.add_entities(domain.name, 1):
                for attr in domain.attributes:
                    template = attr.statements[entity.phrasing[attr.name]]
                    fact = template.format(e=entity.name, v=entity.facts[attr.name])
                    text = f"{domain.intro.format(e=entity.name)} {fact}"
                    out.append(
                        {
                            "id": f"{entity.doc_id}#{attr.name}",
                            "doc_id": entity.doc_id,
                            "domain": domain.name,
                            "text": text,
                        }
                    )
    return out[:count]


def make_corpus(
    out: Path | str,
    seed: int = 0,
    entities_per_domain: int = 8,
    versions: int = 1,
    change_share: float = 0.15,
    add_per_version: int = 4,
    remove_per_version: int = 2,
    tasks: int = 0,
    entities_per_task: int = 3,
    revisions_per_task: int = 2,
    test_share: float = 0.3,
) -> dict[str, int]:
    """Write a corpus folder in the data contract; returns a summary of what was written.

    With `versions > 1` each version is a full snapshot under `v1/`, `v2/`, ...; with
    `tasks > 0` the task sequence is written as versions `t001/`, `t002/`, ..., each adding
    entities of the next domain and revising `revisions_per_task` earlier facts.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    kb = KnowledgeBase(seed=seed, test_share=test_share)
    summary = {"versions": 0, "changed_facts": 0, "added_docs": 0, "removed_docs": 0}
    domain_names = [d.name for d in DOMAINS]

    if tasks > 0:
        for t in range(tasks):
            if t > 0:
                summary["changed_facts"] += len(kb.revise(revisions_per_task))
            added = kb.add_entities(domain_names[t % len(domain_names)], entities_per_task)
            summary["added_docs"] += len(added)
            kb.write(out / f"t{t + 1:03d}")
        summary["versions"] = tasks
        return summary

    for name in domain_names:
        kb.add_entities(name, entities_per_domain)
    for v in range(1, versions + 1):
        if v > 1:
            changed = kb.revise(round(change_share * kb.fact_count()))
            summary["changed_facts"] += len(changed)
            summary["removed_docs"] += len(kb.remove(remove_per_version))
            for i in range(add_per_version):
                kb.add_entities(domain_names[i % len(domain_names)], 1)
            summary["added_docs"] += add_per_version
        kb.write(out / f"v{v}" if versions > 1 else out)
    summary["versions"] = versions
    summary["documents"] = len(kb.entities)
    return summary
