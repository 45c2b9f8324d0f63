"""The fixed-size replay reservoir (components/continual/replay.py)."""

from components.continual.replay import ReplayBuffer


def test_reservoir_stays_bounded_and_samples_uniformly() -> None:
    kept_counts = [0] * 100
    for seed in range(200):
        buffer = ReplayBuffer(10, seed=seed)
        for i in range(100):
            buffer.add({"id": str(i), "answer": "x"})
        assert len(buffer.items) == 10 and buffer.seen == 100
        for item in buffer.items:
            kept_counts[int(item["id"])] += 1
    early, late = sum(kept_counts[:50]), sum(kept_counts[50:])
    assert abs(early - late) < 0.25 * (early + late), "old and new items are kept alike"


def test_refresh_revises_and_drops_stale_facts(tmp_path) -> None:
    buffer = ReplayBuffer(
        5,
        items=[{"id": "a", "answer": "1"}, {"id": "b", "answer": "2"}, {"id": "c", "answer": "3"}],
    )
    touched = buffer.refresh({"a": {"id": "a", "answer": "1"}, "b": {"id": "b", "answer": "20"}})
    assert touched == 2
    assert buffer.items == [{"id": "a", "answer": "1"}, {"id": "b", "answer": "20"}]
    buffer.save(tmp_path / "r.json")
    again = ReplayBuffer.load(tmp_path / "r.json", 5, 0)
    assert again.items == buffer.items and again.seen == buffer.seen
