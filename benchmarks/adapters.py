"""Adapter methods x fusion modes against full fine-tuning, closed-book LoRA and plain RAG.

    .venv/bin/python benchmarks/adapters.py [--steps 40] [--test 40] [--rows lora/in_context,rag,...]

A row is `rag`, `lora-closed-book`, `full-finetune` or `method/fusion[@form]` (fusion in_context,
kv or gated with a per-layer gate; chunks kept whole as key/values, 256 tokens at most; `@form`
stores them as `bfloat16` or `int8` (fusion.chunk_kv_dtype) in training and answering, and the
row reports the key/value bytes of one chunk).

Every row trains on the same generated corpus, the same retrieved passages and the same seed, in
its own process (so peak memory is per row), and is scored on the same held-out questions.
Prints a markdown table and writes benchmarks/results/adapters.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

ROWS = [
    "rag",
    "lora-closed-book",
    "full-finetune",
    *(f"{m}/{f}" for m in ("lora", "adalora", "ia3") for f in ("in_context", "kv", "gated")),
]
METHOD_CONFIG = {
    "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05},
    "adalora": {"init_r": 12, "target_r": 8, "tinit": 5, "tfinal": 10},
    "ia3": {},
}
METHOD_LR = {"lora": 1e-3, "adalora": 2e-3, "ia3": 1e-2}


def _data(seed: int, entities: int, k: int, n_test: int, holdout: str = ""):  # noqa: ANN202
    from components.data.synthetic import make_corpus
    from components.embed.encoder import encode
    from components.evaluation.gold import GoldFinder
    from components.stores.retriever import Retriever
    from components.training.examples import with_retrieval

    folder = Path(tempfile.mkdtemp()) / "kb"
    make_corpus(folder, seed=seed, entities_per_domain=entities)
    docs = sorted((folder / "docs").rglob("*.md"))
    ids = [p.relative_to(folder / "docs").with_suffix("").as_posix() for p in docs]
    texts = [p.read_text() for p in docs]
    retriever = Retriever.build(ids, texts, encode(texts), [{"doc_id": i} for i in ids], "all-MiniLM-L6-v2")
    qa = [json.loads(line) for line in (folder / "qa.jsonl").read_text().splitlines()]
    gold = GoldFinder.whole_documents(ids, texts)
    if holdout:  # zero-shot transfer: train on the other domains, test on this one (indexed only)
        train_items = [q for q in qa if not q["doc_id"].startswith(holdout + "/")]
        test_items = [q for q in qa if q["doc_id"].startswith(holdout + "/") and q["split"] == "test"]
    else:
        train_items = [q for q in qa if q["split"] == "train"]
        test_items = [q for q in qa if q["split"] == "test"]
    train = with_retrieval([q for q in train_items if q["split"] == "train"], retriever, k, gold, seed=seed)
    test = with_retrieval(test_items[:n_test], retriever, k, gold, ensure_gold=False)
    return train, test


def run_row(row: str, args: argparse.Namespace, queue: mp.Queue) -> None:
    import torch

    from components.adapters.base_model import load_base_model
    from components.adapters.builder import build_retro_model, parameter_report
    from components.adapters.generation import generate
    from components.adapters.retro_model import RetroModel
    from components.evaluation.metrics import exact_match, mean, token_f1
    from components.training.examples import Example
    from components.training.trainer import train

    torch.manual_seed(args.seed)
    train_set, test_set = _data(args.seed, args.entities, args.k, args.test, args.holdout_domain)
    base, tokenizer = load_base_model(args.base)
    closed_book = row == "lora-closed-book"
    if closed_book:
        train_set = [Example(e.qid, e.question, e.answer, e.doc_id, []) for e in train_set]
        test_set = [Example(e.qid, e.question, e.answer, e.doc_id, []) for e in test_set]
    stats: dict = {"seconds": 0.0}
    if row == "rag":
        model = RetroModel(base, tokenizer)
        report = {"trainable": 0, "trainable_share": 0.0}
    elif row == "full-finetune":
        model = RetroModel(base, tokenizer)
        for p in base.parameters():
            p.requires_grad_(True)
        report = {"trainable": sum(p.numel() for p in base.parameters()), "trainable_share": 1.0}
        stats = train(model, train_set, args.steps, 4, 5e-5, 320, args.seed)
    else:
        spec = "lora/in_context" if closed_book else row
        spec, _, form = spec.partition("@")
        method, fusion = spec.split("/")
        fusion_params = {
            "fusion": fusion,
            "gate": "layer",
            "chunk_tokens": 256,
            "chunk_kv_dtype": form or "auto",
        }
        model = build_retro_model(base, tokenizer, method, METHOD_CONFIG[method], fusion_params, args.steps)
        report = parameter_report(model)
        on_step = (lambda s: model.model.base_model.update_and_allocate(s)) if method == "adalora" else None
        stats = train(model, train_set, args.steps, 4, METHOD_LR[method], 320, args.seed, on_step=on_step)
    prompts = [model.prompt(e.question, e.passages) for e in test_set]
    predictions = generate(model, prompts, 16, 8, [e.passages for e in test_set])
    queue.put(
        {
            "row": row,
            "em": mean([exact_match(p, e.answer) for p, e in zip(predictions, test_set, strict=True)]),
            "f1": mean([token_f1(p, e.answer) for p, e in zip(predictions, test_set, strict=True)]),
            "trainable": int(report["trainable"]),
            "trainable_pct": 100 * float(report["trainable_share"]),
            "train_seconds": stats["seconds"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "chunk_kv_bytes": _stored_bytes(model, test_set[0].passages[0]) if model.uses_memory else None,
        }
    )


def _stored_bytes(model, text: str) -> int:  # noqa: ANN001
    """Bytes one chunk's key/values take in the model's storage form (what the disk tier holds)."""
    from components.adapters.kv_store import to_tensors

    kv = model.chunk_key_values([text])[0]
    return sum(t.numel() * t.element_size() for t in to_tensors(kv, model.kv_store.form).values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--test", type=int, default=40, help="held-out questions scored")
    parser.add_argument("--entities", type=int, default=8, help="entities per domain")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument(
        "--lr", type=float, default=0.0, help="learning rate for every adapter row (0 = per method)"
    )
    parser.add_argument("--holdout-domain", default="", help="train without this domain, test only on it")
    parser.add_argument("--out", default="adapters.json", help="file name under benchmarks/results/")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    results = []
    print("| row | EM | F1 | trainable params | trainable % | train s | peak RSS MB | chunk KV MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in args.rows.split(","):
        queue = ctx.Queue()
        started = time.perf_counter()
        proc = ctx.Process(target=run_row, args=(row, args, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            print(f"| {row} | failed (exit {proc.exitcode}) | | | | | | |", flush=True)
            continue
        r = queue.get()
        r["wall_seconds"] = time.perf_counter() - started
        results.append(r)
        print(
            f"| {r['row']} | {r['em']:.3f} | {r['f1']:.3f} | {r['trainable']:,} | {r['trainable_pct']:.3f} "
            f"| {r['train_seconds']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['chunk_kv_bytes'] / 2**20 if r['chunk_kv_bytes'] else 0:.2f} |",
            flush=True,
        )
    out = Path(__file__).parent / "results" / args.out
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
