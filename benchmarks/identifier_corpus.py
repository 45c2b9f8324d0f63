"""An identifier-heavy corpus: maintenance service bulletins full of part, kit and section numbers.

    .venv/bin/python -m benchmarks.identifier_corpus OUT [--bulletins 50] [--seed 0]

Written in the data contract (docs/*.md + qa.jsonl). Unlike the synthetic generator (one fact
per document, one template per attribute), every bulletin covers several parts of the same few
components in the same words, so what tells two passages apart is an identifier: the bulletin
(SB-1427), the part number (P/N 4471-220-03, neighbours differ in one digit), a kit (KT-9031),
a section (4.2.1), a torque (35.5 N·m). Questions name the identifiers in five phrasings and
never copy the passage's sentence; a stable 30% of them are test questions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

COMPONENTS = [
    "hydraulic pump housing seal",
    "nose gear actuator bushing",
    "fuel boost pump gasket",
    "bleed air valve clamp",
    "cabin pressure controller connector",
    "main gear brake wear pin",
    "engine mount bolt",
    "flap track roller",
]
SYSTEMS = ["landing gear", "fuel system", "hydraulics", "pneumatics", "engine mounts", "flight controls"]
ACTIONS = ["replaced", "inspected", "reworked", "lubricated"]
QUESTIONS = [
    ("What torque does {sb} give for P/N {pn}?", "torque"),
    ("Which replacement kit covers part {pn}?", "kit"),
    ("How often must part number {pn} be checked, per {sb}?", "interval"),
    ("Under which section of {sb} is {pn} handled?", "section"),
    ("For P/N {pn}, what is the maximum allowed wear?", "wear"),
]


def _part_number(rng: random.Random, family: int) -> str:
    return f"{family}-{rng.randint(100, 399)}-{rng.randint(1, 40):02d}"


def bulletin(rng: random.Random, number: int, parts: int) -> tuple[str, list[dict]]:
    """One bulletin's markdown and the facts of its parts."""
    system = rng.choice(SYSTEMS)
    sb = f"SB-{number}"
    family = rng.choice([4471, 4417, 7144, 1447])  # part numbers that share their pieces across bulletins
    lines = [
        f"# Service Bulletin {sb}: {system} maintenance",
        "",
        f"Revision {rng.choice('ABCDE')}, effective 20{rng.randint(18, 26)}-{rng.randint(1, 12):02d}-01. "
        f"Applies to serial numbers {rng.randint(100, 499)} through {rng.randint(500, 999)}.",
        "",
    ]
    facts = []
    for i in range(parts):
        fact = {
            "sb": sb,
            "pn": _part_number(rng, family),
            "component": rng.choice(COMPONENTS),
            "section": f"{rng.randint(2, 9)}.{i + 1}.{rng.randint(1, 9)}",
            "torque": f"{rng.randint(8, 95)}.{rng.choice([0, 5])} N·m",
            "kit": f"KT-{rng.randint(1000, 9999)}",
            "interval": f"every {rng.choice([150, 300, 600, 1200, 2400])} flight hours",
            "wear": f"{rng.randint(1, 9)}.{rng.randint(0, 9)}{rng.randint(1, 9)} mm",
        }
        facts.append(fact)
        lines += [
            f"## {fact['section']} {fact['component'].capitalize()}",
            "",
            f"The {fact['component']} (P/N {fact['pn']}) is {rng.choice(ACTIONS)} as described in section "
            f"{fact['section']}. Tighten its fasteners to {fact['torque']} and check it {fact['interval']}. "
            f"Wear beyond {fact['wear']} requires replacement with kit {fact['kit']}.",
            "",
        ]
    return "\n".join(lines), facts


def write(folder: Path, bulletins: int = 50, parts: int = 6, seed: int = 0) -> dict[str, int]:
    """Write the corpus to `folder` (docs/ and qa.jsonl); returns its counts."""
    rng = random.Random(seed)
    docs = Path(folder) / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    rows = []
    numbers = rng.sample(range(1000, 2000), bulletins)
    for number in numbers:
        text, facts = bulletin(rng, number, parts)
        doc_id = f"sb-{number}"
        (docs / f"{doc_id}.md").write_text(text)
        for fact in facts:
            template, key = rng.choice(QUESTIONS)
            qid = f"{doc_id}#{fact['pn']}#{key}"
            test = int(hashlib.sha1(qid.encode()).hexdigest()[:8], 16) % 10 < 3
            rows.append(
                {
                    "id": qid,
                    "question": template.format(**fact),
                    "answer": fact[key],
                    "doc_id": doc_id,
                    "split": "test" if test else "train",
                }
            )
    (Path(folder) / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"documents": bulletins, "questions": len(rows), "test": sum(r["split"] == "test" for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--bulletins", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write(args.out, args.bulletins, seed=args.seed))


if __name__ == "__main__":
    main()
