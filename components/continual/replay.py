"""A fixed-size replay reservoir (Vitter's algorithm R) that keeps facts current."""

from __future__ import annotations

import json
import random
from pathlib import Path

RESERVOIR_FILE = "replay.json"  # the reservoir's file in the continual chain's folder


class ReplayBuffer:
    """Holds at most `capacity` examples, each seen example equally likely to be kept."""

    def __init__(self, capacity: int, seed: int = 0, seen: int = 0, items: list[dict] | None = None) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity, self.seed, self.seen = capacity, seed, seen
        self.items: list[dict] = list(items or [])[:capacity]

    def add(self, item: dict) -> None:
        """Offer an example to the reservoir (kept with probability capacity / seen)."""
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
            return
        slot = random.Random(f"{self.seed}:{self.seen}").randrange(self.seen)
        if slot < self.capacity:
            self.items[slot] = item

    def refresh(self, current: dict[str, dict]) -> int:
        """Replace each buffered item by its current version (by `id`); drop ones that are gone.

        Returns how many items were revised or dropped, so replay never teaches a stale fact.
        """
        kept, touched = [], 0
        for item in self.items:
            now = current.get(item["id"])
            if now is None:
                touched += 1
                continue
            touched += now["answer"] != item["answer"]
            kept.append(now)
        self.items = kept
        return touched

    def save(self, path: Path) -> None:
        """Write the reservoir and its sampling state as JSON."""
        state = {
            "capacity": self.capacity,
            "seed": self.seed,
            "seen": self.seen,
            "items": self.items,
        }
        Path(path).write_text(json.dumps(state))

    @classmethod
    def load(cls, path: Path, capacity: int, seed: int) -> ReplayBuffer:
        """Read a saved reservoir, or start an empty one when `path` does not exist."""
        if not Path(path).exists():
            return cls(capacity, seed)
        state = json.loads(Path(path).read_text())
        return cls(capacity, seed, state["seen"], state["items"])


def purge_documents(path: Path, doc_ids: set[str] | frozenset[str]) -> int:
    """Drop every item of these documents from a saved reservoir; returns how many were dropped."""
    path = Path(path)
    if not doc_ids or not path.exists():
        return 0
    state = json.loads(path.read_text())
    kept = [item for item in state["items"] if item.get("doc_id") not in doc_ids]
    dropped = len(state["items"]) - len(kept)
    if dropped:
        path.write_text(json.dumps(state | {"items": kept}))
    return dropped
