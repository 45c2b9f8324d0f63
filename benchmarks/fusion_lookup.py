"""Can each fusion mode learn to read retrieved chunks? A key -> value lookup on a tiny model.

    .venv/bin/python -m benchmarks.fusion_lookup

A tiny random llama answers `kX` with the `vY` written beside `kX` in one of two chunks (the other
a distractor; every pairing drawn afresh, so only the chunks can tell). Each row trains with the
same data, seed and steps (`tests/unit/test_kv_fusion.py`: LOOKUP_STEPS steps of batch 16, LoRA
r=8 on every linear layer, lr 1e-2) and is scored on held-out pairings; closed book is chance.
Prints a markdown table.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

ROWS = {
    "closed book (kv, no chunks)": ({"fusion": "kv"}, False),
    "in_context": ({"fusion": "in_context"}, True),
    "kv": ({"fusion": "kv"}, True),
    "gated (layer gate)": ({"fusion": "gated", "gate": "layer"}, True),
    "gated (head gate)": ({"fusion": "gated", "gate": "head"}, True),
}


def main() -> None:
    from tests.unit.test_kv_fusion import LOOKUP, LOOKUP_STEPS, lookup_accuracy, lookup_model

    print(f"chance: 1/{LOOKUP}\n\n| row | steps | held-out accuracy | seconds |\n|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        model = lookup_model(Path(folder) / "model")
        for name, (fusion, with_memory) in ROWS.items():
            began = time.perf_counter()
            accuracy = lookup_accuracy(model, with_memory, fusion)
            print(
                f"| {name} | {LOOKUP_STEPS} | {accuracy:.2f} | {time.perf_counter() - began:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
