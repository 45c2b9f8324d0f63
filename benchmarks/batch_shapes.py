"""Memory across updates: training batches padded to their longest example against a few shapes.

    .venv/bin/python benchmarks/batch_shapes.py                     # SmolLM2, PubMedQA, ~25 min
    .venv/bin/python benchmarks/batch_shapes.py --updates 5 --steps 2 --model <tiny model folder>
    .venv/bin/python benchmarks/batch_shapes.py --from-results <its --out JSON>        # the table again

A continual learner trains update after update in one process, on prompts of new lengths. Under
bfloat16 autocast on the CPU each new input shape of a linear layer leaves native memory behind,
so a batch padded to its own longest example (a new shape at almost every step) makes the
process grow with every update. The trainer pads to a multiple of `PAD_MULTIPLE` tokens instead.

Both settings run the same updates (`--steps` steps of batch 4 on PubMedQA questions, each with
a window of its abstract of random length, as the continual protocol's prompts), one after the
other, each in a fresh process with one thread. The table gives the resident memory after each
setting's first and last update (garbage collected and trimmed), its growth per update by least
squares, the distinct batch shapes trained on and the median seconds a step, with ratios.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(__file__).resolve().parents[1]
PUBMEDQA = ROOT.parent / "shared" / "corpora" / "pubmedqa"


def examples(corpus: Path, count: int, seed: int = 1) -> list:
    """`count` PubMedQA questions, each with a window of 40 to 160 words of its abstract."""
    from components.training.examples import Example

    rng = random.Random(seed)
    items = [json.loads(line) for line in (corpus / "qa.jsonl").read_text().splitlines()][:count]
    out = []
    for it in items:
        words = (corpus / "docs" / f"{it['doc_id']}.md").read_text().split()
        start = rng.randrange(max(1, len(words) - 40))
        window = " ".join(words[start : start + rng.randint(40, 160)])
        out.append(Example(it["id"], it["question"], it["answer"], it["doc_id"], [window]))
    return out


def resident_mb() -> float:
    """Resident memory after collecting garbage and returning free heap pages to the system."""
    import psutil

    from benchmarks.continual_harness import release_free_memory

    release_free_memory()
    return psutil.Process().memory_info().rss / 2**20


def run_setting(pad_multiple: int, args: argparse.Namespace, out: multiprocessing.Queue) -> None:
    """One setting in this (fresh) process: `args.updates` updates of `args.steps` steps each."""
    import torch

    from components.adapters.base_model import load_base_model
    from components.adapters.builder import build_retro_model
    from components.training import trainer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    base, tokenizer = load_base_model(args.model)
    model = build_retro_model(base, tokenizer, "lora", {"r": 8, "lora_alpha": 16}, max_trainable_share=None)
    pool = examples(args.corpus, args.updates * args.per_update)
    shapes: set[tuple[int, ...]] = set()
    collate = trainer.collate

    def counting_collate(*a, **k):  # noqa: ANN002, ANN003, ANN202
        batch = collate(*a, **k)
        shapes.add(tuple(batch["input_ids"].shape))
        return batch

    trainer.collate = counting_collate
    after, seconds = [], []
    for u in range(args.updates):
        part = pool[u * args.per_update : (u + 1) * args.per_update]
        started = time.perf_counter()
        trainer.train(
            model, part, args.steps, batch_size=4, lr=1e-3, max_length=256, seed=u, pad_multiple=pad_multiple
        )
        seconds.append((time.perf_counter() - started) / args.steps)
        after.append(resident_mb())
    out.put({"pad_multiple": pad_multiple, "rss_after_mb": after, "step_s": seconds, "shapes": len(shapes)})


def measure(args: argparse.Namespace) -> list[dict]:
    """Each setting in a fresh process, one after the other."""
    from components.training.trainer import PAD_MULTIPLE

    context = multiprocessing.get_context("spawn")
    results = []
    for multiple in (1, PAD_MULTIPLE):
        queue = context.Queue()
        process = context.Process(target=run_setting, args=(multiple, args, queue))
        process.start()
        results.append(_result_of(process, queue))
        process.join()
    return results


def _result_of(process: multiprocessing.Process, queue: multiprocessing.Queue) -> dict:
    """The setting's result, or an error when its process ended without one."""
    import queue as queues

    while True:
        try:
            return queue.get(timeout=5)
        except queues.Empty:
            if not process.is_alive():
                raise RuntimeError(f"the measuring process ended with code {process.exitcode}") from None


def table(results: list[dict]) -> str:
    """The markdown table, with the padded setting's ratios to the unpadded one."""
    first = results[0]
    columns = [
        "batches padded to",
        "distinct shapes",
        "RSS after update 1 (MB)",
        "after the last",
        "growth per update (MB)",
        "s / step (median)",
        "ratio",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    for r in results:
        rss = r["rss_after_mb"]
        slope = np.polyfit(np.arange(1, len(rss)), rss[1:], 1)[0] if len(rss) > 2 else float("nan")
        step = float(np.median(r["step_s"]))  # the median: robust to a burst of other load
        base = float(np.median(first["step_s"]))
        multiple = r["pad_multiple"]
        name = "the longest example" if multiple == 1 else f"a multiple of {multiple} tokens"
        cells = [name, str(r["shapes"]), f"{rss[0]:,.0f}", f"{rss[-1]:,.0f}", f"{slope:.1f}"]
        lines.append("| " + " | ".join([*cells, f"{step:.2f}", f"{step / base:.2f}"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    """Run both settings and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct", help="base model name or folder")
    parser.add_argument("--corpus", type=Path, default=PUBMEDQA)
    parser.add_argument("--updates", type=int, default=15, help="updates in one process")
    parser.add_argument("--steps", type=int, default=8, help="training steps an update")
    parser.add_argument("--per-update", type=int, default=20, help="questions an update trains on")
    parser.add_argument("--out", type=Path, default=None, help="JSON of the measurements")
    parser.add_argument("--from-results", type=Path, default=None, help="print the table of a saved JSON")
    args = parser.parse_args(argv)
    if args.from_results:
        results = json.loads(args.from_results.read_text())
        print(table(results))
        return results
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ["OMP_NUM_THREADS"] = "1"
    results = measure(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return results


if __name__ == "__main__":
    main()
