"""Several adapters on one base model (components/adapters/adapter_set.py): each answers with its
own adapter, a mixed batch equals the same prompts answered one by one, and unloading one leaves
the others as they were."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.adapters.adapter_set import AdapterSet
from components.adapters.builder import load_retro_model
from components.adapters.generation import generate
from tests.fixtures.tiny_model import random_adapter

PROMPTS = [
    "Zorvex is made by Orbell Works . Who makes Zorvex ?",
    "The Kelvar bridge opened in 1931 . When did it open ?",
    "Quintal yields are measured in tonnes . What unit ?",
    "Mirelle leads the Aston lab . Who leads it ?",
]


@pytest.fixture(scope="module")
def four_adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {f"d{i}": random_adapter(tiny_model, root / f"d{i}", seed=10 + i) for i in range(4)}


def test_each_adapter_answers_as_when_loaded_alone_and_a_mixed_batch_equals_one_by_one(
    four_adapters: dict[str, Path],
) -> None:
    shared = AdapterSet()
    for slot, folder in four_adapters.items():
        shared.add(slot, folder)
    slots = list(four_adapters)
    alone = {}
    for slot, folder in four_adapters.items():  # each adapter on its own base model: the reference
        model = load_retro_model(folder)
        alone[slot] = generate(model, PROMPTS, max_new_tokens=6, batch_size=4)
    mixed = [(slots[i % 4], PROMPTS[i], []) for i in range(4)]
    one_by_one = [shared.generate_slots([item], 6)[0] for item in mixed]
    assert shared.generate_slots(mixed, 6) == one_by_one
    assert one_by_one == [alone[slots[i % 4]][i] for i in range(4)]
    answers_of = {slot: shared.generate_slots([(slot, p, []) for p in PROMPTS], 6) for slot in slots}
    assert answers_of == alone
    assert len({tuple(a) for a in answers_of.values()}) > 1  # their training differs, so do they


def test_unloading_one_adapter_leaves_the_others(four_adapters: dict[str, Path]) -> None:
    shared = AdapterSet()
    for slot, folder in four_adapters.items():
        shared.add(slot, folder)
    before = shared.generate_slots([("d1", p, []) for p in PROMPTS], 6)
    shared.remove("d0")
    assert shared.slots == ["d1", "d2", "d3"]
    assert shared.generate_slots([("d1", p, []) for p in PROMPTS], 6) == before


def test_ia3_adapters_are_answered_one_group_each(tiny_model: Path, tmp_path: Path) -> None:
    folders = {f"ia{i}": random_adapter(tiny_model, tmp_path / f"ia{i}", 20 + i, "ia3") for i in range(2)}
    shared = AdapterSet()
    for slot, folder in folders.items():
        shared.add(slot, folder)
    mixed = [("ia0", PROMPTS[0], []), ("ia1", PROMPTS[1], []), ("ia0", PROMPTS[2], [])]
    expected = [generate(load_retro_model(folders[s]), [p], 6, 1)[0] for s, p, _ in mixed]
    assert shared.generate_slots(mixed, 6) == expected


def test_an_adapter_of_another_kind_is_refused(four_adapters: dict[str, Path], tmp_path: Path) -> None:
    shared = AdapterSet()
    shared.add("d0", four_adapters["d0"])
    other = tmp_path / "other"
    other.mkdir()
    for item in four_adapters["d1"].iterdir():
        (other / item.name).write_bytes(item.read_bytes())
    config = (other / "retro_config.json").read_text().replace(str(four_adapters["d1"].parent), "x")
    (other / "retro_config.json").write_text(config.replace('"base_model": "', '"base_model": "other-'))
    with pytest.raises(ValueError, match="not the served base"):
        shared.add("d9", other)
