"""Time to first token with `fusion: kv` against in-context fusion, on the default model.

    .venv/bin/python -m benchmarks.kv_latency [--questions 20] [--k 3] [--corpus DIR]

Passages: 100-word windows of the documents of ../shared/corpora/covid-qa,
each question given k of them drawn at random, so no combination recurs. For each question:
- in-context: the prompt with the k passages written in, prefilled in full;
- kv, miss: the chunks' key/values computed now (tier 3), then the question prefilled;
- kv, cold: key/values read from the disk tier (RAM emptied before each question);
- kv, warm: key/values already in RAM.
The time is to the first generated token (prefill and one greedy step), one question at a time.
Also prints bytes per chunk (float32, every layer) and the tokens prefilled. Same model, same
fresh LoRA adapter, same questions and passages in every row.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COVID = ROOT.parent / "shared" / "corpora" / "covid-qa"
WORDS = 100  # words per passage: about 150 SmolLM2 tokens
CHUNK_TOKENS = 512  # never cuts a passage


def passages_of(corpus: Path, words: int = WORDS) -> list[str]:
    """Consecutive `words`-word windows of every document."""
    texts = []
    for path in sorted(p for p in (corpus / "docs").rglob("*") if p.is_file()):
        body = path.read_text(errors="ignore").split()
        texts += [" ".join(body[i : i + words]) for i in range(0, len(body) - words + 1, words)]
    return texts


def questions_of(corpus: Path, count: int) -> list[str]:
    import json

    rows = [json.loads(line) for line in (corpus / "qa.jsonl").open()]
    return [r["question"] for r in rows[:count]]


def first_token_ms(model, prompt: str, passages: list[str] | None) -> float:  # noqa: ANN001
    """Milliseconds to the first greedy token (prefill + one step)."""
    from components.adapters.generation import generate

    began = time.perf_counter()
    generate(model, [prompt], 1, 1, [passages] if passages is not None else None)
    return (time.perf_counter() - began) * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--corpus", type=Path, default=COVID)
    args = parser.parse_args(argv)
    import torch

    from components.adapters.base_model import DEFAULT_BASE_MODEL, load_base_model
    from components.adapters.builder import build_retro_model
    from components.core.environment import apply_offline_env

    apply_offline_env()
    torch.set_grad_enabled(False)
    rng = random.Random(0)
    pool, questions = passages_of(args.corpus), questions_of(args.corpus, args.questions)
    draws = [rng.sample(pool, args.k) for _ in questions]
    lora = {"r": 8, "lora_alpha": 16}
    models = {}
    for mode in ("in_context", "kv"):
        base, tokenizer = load_base_model(DEFAULT_BASE_MODEL)
        fusion = {"fusion": mode, "chunk_tokens": CHUNK_TOKENS}  # whole passages: the same tokens both ways
        models[mode] = build_retro_model(base, tokenizer, "lora", lora, fusion, 10, None)
    in_context, kv = models["in_context"], models["kv"]
    first_token_ms(in_context, in_context.prompt("warm up", draws[0]), None)  # load kernels
    rows: dict[str, list[float]] = {
        "in-context": [],
        "kv, miss (recompute)": [],
        "kv, cold (disk)": [],
        "kv, warm (RAM)": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        kv.use_kv_folder(Path(folder), disk_bytes=64 * 2**30)
        for question, passages in zip(questions, draws, strict=True):
            rows["in-context"].append(first_token_ms(in_context, in_context.prompt(question, passages), None))
            prompt = kv.prompt(question, passages)
            rows["kv, miss (recompute)"].append(first_token_ms(kv, prompt, passages))
            kv.kv_store._ram.clear()
            kv.kv_store._ram_used = 0
            rows["kv, cold (disk)"].append(first_token_ms(kv, prompt, passages))
            rows["kv, warm (RAM)"].append(first_token_ms(kv, prompt, passages))
        chunk_bytes = statistics.median(c.nbytes for c in kv.chunk_key_values(draws[0]))
        tokens = statistics.median(len(c.keys[0][0]) for c in kv.chunk_key_values(draws[0]))
    prompt_tokens = len(in_context.tokenizer(in_context.prompt(questions[0], draws[0]))["input_ids"])
    question_tokens = len(kv.tokenizer(kv.prompt(questions[0], draws[0]))["input_ids"])
    print(
        f"{len(questions)} questions, k={args.k}, {torch.get_num_threads()} threads; "
        f"chunk: {tokens:.0f} tokens, "
        f"{chunk_bytes / 2**20:.2f} MiB of key/values (float32, every layer)"
    )
    print(f"tokens prefilled: in-context {prompt_tokens}, kv {question_tokens} (question only)\n")
    print("| path | first token p50 (ms) | p90 (ms) | vs in-context |\n|---|---:|---:|---:|")
    base_p50 = statistics.median(rows["in-context"])
    for name, times in rows.items():
        p50, p90 = statistics.median(times), sorted(times)[int(0.9 * (len(times) - 1))]
        print(f"| {name} | {p50:.1f} | {p90:.1f} | {p50 / base_p50:.2f}x |")


if __name__ == "__main__":
    main()
