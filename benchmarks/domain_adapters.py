"""Several adapters on one base model: memory and batch time (components/adapters/adapter_set.py).

Loads the default base model with N LoRA adapters of the default config (seeded random weights:
memory and speed do not depend on what they learned) and reports:
- peak RSS of the process with the base model and one adapter, then with N adapters, against
  the goal base + N x adapter size + 10%;
- the time of one mixed batch (each question for another adapter) against the same questions
  answered one by one, and whether their answers are equal.

    .venv/bin/python benchmarks/domain_adapters.py --adapters 4
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUESTIONS = [
    "Context: The Varnholt Act dates from 1999.\nQuestion: When does the Varnholt Act date from?\nAnswer:",
    "Context: Quillan tablets treat the Merrow fever.\nQuestion: What do Quillan tablets treat?\nAnswer:",
    "Context: Orbell Works pays a dividend of 4 percent.\nQuestion: What dividend does Orbell pay?\nAnswer:",
    "Context: Mirelle leads the Aston lab.\nQuestion: Who leads the Aston lab?\nAnswer:",
]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_adapters(base_name: str, folder: Path, count: int) -> list[Path]:
    """`count` LoRA artifacts of the default config with seeded random weights."""
    import torch

    from components.adapters.base_model import load_base_model
    from components.adapters.builder import build_retro_model
    from components.core.params import TrainParams

    p = TrainParams()
    base, tokenizer = load_base_model(base_name)
    model = build_retro_model(base, tokenizer, p.method, p.config)
    saved = []
    for i in range(count):
        torch.manual_seed(i)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn_like(param) * 0.02)
        out = folder / f"d{i}"
        model.save(out, {"base_model": base_name, "method": p.method, "retrieval": {"k": 3}})
        saved.append(out)
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the measuring process's folder
    args = parser.parse_args()
    if args.measure:
        run(sorted(Path(args.measure).iterdir()), args.max_new_tokens)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_adapters(args.base, Path(tmp), args.adapters)
        # measured in a fresh process: the model that wrote the adapters would count in its RSS
        subprocess.run(
            [sys.executable, __file__, "--measure", tmp, "--max-new-tokens", str(args.max_new_tokens)],
            check=True,
        )


def run(folders: list[Path], max_new_tokens: int) -> None:
    """Load the adapters onto one base model, then time a mixed batch against one by one."""
    from components.adapters.adapter_set import AdapterSet

    adapter_mb = sum(f.stat().st_size for f in folders[0].iterdir()) / 2**20
    shared = AdapterSet()
    shared.add("d0", folders[0])
    one = peak_rss_mb()
    for i, folder in enumerate(folders[1:], start=1):
        shared.add(f"d{i}", folder)
    every = peak_rss_mb()
    items = [(f"d{i % len(folders)}", QUESTIONS[i % len(QUESTIONS)], []) for i in range(len(folders))]
    shared.generate_slots(items[:1], 2)  # warm-up
    began = time.perf_counter()
    mixed = shared.generate_slots(items, max_new_tokens)
    mixed_s = time.perf_counter() - began
    began = time.perf_counter()
    single = [shared.generate_slots([item], max_new_tokens)[0] for item in items]
    single_s = time.perf_counter() - began
    n = len(folders)
    print(
        f"| adapters | adapter file (MB) | peak RSS, 1 adapter (MB) | peak RSS, {n} adapters (MB) | "
        f"goal: 1-adapter RSS + {n - 1} x adapter + 10% (MB) | mixed batch (s) | one by one (s) | equal |"
    )
    print("|---|---|---|---|---|---|---|---|")
    goal = (one + (n - 1) * adapter_mb) * 1.10
    print(
        f"| {n} | {adapter_mb:.1f} | {one:.0f} | {every:.0f} | {goal:.0f} | {mixed_s:.2f} | {single_s:.2f} "
        f"| {mixed == single} |"
    )


if __name__ == "__main__":
    main()
