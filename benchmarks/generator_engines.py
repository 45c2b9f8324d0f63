"""Generator engines side by side (`serve.engine` torch | llamacpp), one run, the same prompts.

    .venv/bin/python -m benchmarks.generator_engines --project /path/to/demo   # after `make demo`
    .venv/bin/python -m benchmarks.generator_engines --corpus covid            # covid-qa, base model

The engines are the service's own `Answerer`: the same retrieval, the same prompt builder (a
system line, the passages, the question), the same greedy decoding and stop rules. torch is
transformers in eager float32 (the packaged Q4_1 weights dequantized); llamacpp is
llama-cpp-python on a GGUF of the same weights (`serve.llamacpp.weights`: q8_0, q4_0) with the
adapter as a GGUF LoRA; torch-int8 is the torch engine with `serve.torch.decode_weights: int8`
(`--decode-weights full,int8`). `--fusion kv` (covid) times an adapter that reads the chunks as
key/values, which only the torch engines run.

Speed, per engine, on the same prompts with 1 and with 3 passages, p50 over the questions (the
engines take turns prompt by prompt, so load on the machine falls on both alike):
- cold: nothing cached; time to the first token, and to 24 new tokens (end of text suppressed,
  so every answer is 24 tokens long), and the decode rate between them;
- reused passages: the passages' key/values were computed for another question before (torch:
  a copy of the cached prefix key/values, as the service's streaming path does; llama.cpp: its
  saved sequence state restored), so only the question is prefilled; 24 tokens again.

Quality: EM and F1 of each engine's answers (as the service gives them) on the questions, with
the share of identical answers.

- `--project`: a pipeline's project folder (`make demo`): its registered-to-be adapter
  (data/models/current), its index, and its test questions.
- `--corpus covid`: ../shared/corpora/covid-qa chunked as the chunk stage does, a hybrid index of
  its chunks (MiniLM), its human questions whose answer was located in a chunk, and the default
  model with an untrained LoRA (the base model's answers).

Prints markdown tables and writes benchmarks/results/generator_engines_<source>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
NEW_TOKENS = 24


def project_source(project: Path, questions: int) -> tuple[Path, Path, list[tuple[str, list[str]]]]:
    """(adapter folder, index folder, (question, gold answers)) of a pipeline's project folder."""
    import pandas as pd

    from components.core.paths import Paths

    layout = Paths(project)
    qa = pd.read_parquet(layout.qa)
    test = qa[qa["split"] == "test"].head(questions)
    return (
        layout.current_adapter,
        layout.index,
        [(q, [a]) for q, a in zip(test["question"], test["answer"], strict=True)],
    )


def covid_source(
    folder: Path, questions: int, fusion: str = "in_context"
) -> tuple[Path, Path, list[tuple[str, list[str]]]]:
    """covid-qa as above: a hybrid index of its chunks and an untrained LoRA on the default model."""
    from embedding_engines import COVID, covid_chunks

    from components.adapters.base_model import DEFAULT_BASE_MODEL, load_base_model
    from components.adapters.builder import build_retro_model
    from components.embed.encoder import encode
    from components.stores.retriever import Retriever

    ids, texts, asked, _ = covid_chunks()
    qa = [json.loads(line) for line in (COVID / "qa.jsonl").read_text().splitlines() if line.strip()]
    answers = {item["question"]: item["answer"] for item in qa}
    retriever = Retriever.build(
        ids, texts, encode(texts, "all-MiniLM-L6-v2"), [{"doc_id": i} for i in ids], "all-MiniLM-L6-v2"
    )
    retriever.save(folder / "index")
    base, tokenizer = load_base_model(DEFAULT_BASE_MODEL)
    model = build_retro_model(
        base, tokenizer, "lora", {"r": 8, "lora_alpha": 16}, {"fusion": fusion}, max_trainable_share=None
    )
    model.save(
        folder / "adapter", {"base_model": DEFAULT_BASE_MODEL, "method": "lora", "retrieval": {"k": 3}}
    )
    rows = [(q, [answers[q]]) for q in asked if q in answers][:questions]
    return folder / "adapter", folder / "index", rows


# -- timing ----------------------------------------------------------------------------------------
def torch_tokens(answerer: Any, pair: tuple[str, list[str]], n: int, reuse: bool) -> None:
    """`n` greedy tokens on the torch engine (end of text suppressed), from a cold prompt or from
    the cached key/values of its passage prefix (kv and gated adapters: the chunks' key/values,
    from the store's RAM tier when reused)."""
    model, (prompt, passages) = answerer.model, pair
    inputs = (
        answerer._prefilled(prompt)
        if reuse
        else dict(model.tokenizer([prompt], return_tensors="pt", add_special_tokens=False))
    )
    with torch.inference_mode():
        model.generate(
            passages=[passages] if model.uses_memory else None,
            **inputs,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=model.tokenizer.pad_token_id,
        )


def llama_tokens(answerer: Any, pair: tuple[str, list[str]], n: int, reuse: bool) -> None:
    """The same on llama.cpp: the saved passage-prefix state restored (reuse), or a cold context."""
    engine, prompt = answerer.llama, pair[0]
    ids = engine._ids(prompt)
    if reuse:
        engine._use_prefix(prompt, ids)
    else:
        engine.llm.reset()
    for count, _ in enumerate(engine.greedy(ids), start=1):
        if count >= n:
            break


def served_answer(answerer: Any, pair: tuple[str, list[str]]) -> None:
    """An answer as the service gives it, its passages' key/values reused: up to 24 tokens, ended
    by the end of text (and on llama.cpp by the first line break, as its engine stops there)."""
    prompt, passages = pair
    if answerer.llama is not None:
        answerer.llama.answer(prompt, NEW_TOKENS)
        return
    model = answerer.model
    with torch.inference_mode():
        model.generate(
            passages=[passages] if model.uses_memory else None,
            **answerer._prefilled(prompt),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=model.tokenizer.pad_token_id,
            eos_token_id=model.tokenizer.eos_token_id,
        )


def runner(name: str) -> Any:
    return torch_tokens if name.startswith("torch") else llama_tokens


def timed(run: Any, *args: Any) -> float:
    started = time.perf_counter()
    run(*args)
    return (time.perf_counter() - started) * 1000


def speed(
    engines: dict[str, Any], prompts: list[tuple[str, list[str]]], alternates: list[tuple[str, list[str]]]
) -> dict[str, dict[str, float]]:
    """p50 milliseconds per engine; `alternates` are prompts over other passages, asked between two
    reused-passage timings so that each restores its prefix from the cache, not from the context."""
    times: dict[str, dict[str, list[float]]] = {
        name: {"first": [], "full": [], "reused": [], "served": []} for name in engines
    }
    for name, answerer in engines.items():  # warm-up, and the passages' key/values cached once
        for prompt in prompts[:1] + alternates[:1]:
            runner(name)(answerer, prompt, 2, False)
        for prompt in prompts + alternates:
            runner(name)(answerer, prompt, 1, True)
    for prompt, other in zip(prompts, alternates, strict=True):
        for name, answerer in engines.items():
            run = runner(name)
            times[name]["first"].append(timed(run, answerer, prompt, 1, False))
            times[name]["full"].append(timed(run, answerer, prompt, NEW_TOKENS, False))
            run(answerer, other, 1, True)
            times[name]["reused"].append(timed(run, answerer, prompt, NEW_TOKENS, True))
            run(answerer, other, 1, True)
            times[name]["served"].append(timed(served_answer, answerer, prompt))
    out = {}
    for name, t in times.items():
        first, full = median(t["first"]), median(t["full"])
        out[name] = {
            "first_token_ms": first,
            "answer_24_ms": full,
            "decode_tokens_per_s": (NEW_TOKENS - 1) / max(full - first, 1e-6) * 1000,
            "answer_24_reused_ms": median(t["reused"]),
            "answer_served_reused_ms": median(t["served"]),
        }
    return out


def quality(
    engines: dict[str, Any], rows: list[tuple[str, list[str]]], hits: list, max_new_tokens: int
) -> dict:
    from components.evaluation.metrics import exact_match, token_f1

    answers = {}
    for name, answerer in engines.items():
        prompts = [answerer.prompt(q, h) for (q, _), h in zip(rows, hits, strict=True)]
        answers[name] = [answerer.generate([p], max_new_tokens)[0] for p in prompts]
    out: dict[str, Any] = {}
    for name, predicted in answers.items():
        out[name] = {
            "em": sum(
                max(exact_match(p, g) for g in gold) for p, (_, gold) in zip(predicted, rows, strict=True)
            )
            / len(rows),
            "f1": sum(max(token_f1(p, g) for g in gold) for p, (_, gold) in zip(predicted, rows, strict=True))
            / len(rows),
        }
    reference = answers[next(iter(answers))]
    for name, predicted in answers.items():
        same = sum(a == b for a, b in zip(reference, predicted, strict=True))
        out[name]["identical_to_torch"] = same / len(rows)
    out["differing"] = [
        {"question": q, "gold": g[0], **{name: answers[name][i] for name in answers}}
        for i, (q, g) in enumerate(rows)
        if len({answers[name][i] for name in answers}) > 1
    ][:8]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--project", type=Path, help="a pipeline's project folder (after make demo)")
    parser.add_argument("--corpus", choices=["covid"], help="covid-qa with the base model")
    parser.add_argument("--label", help="results/generator_engines_<label>.json (default: the source)")
    parser.add_argument("--questions", type=int, default=60, help="questions for EM/F1")
    parser.add_argument("--timed", type=int, default=12, help="prompts timed per passage count")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--weights",
        default="q8_0,q4_1,q4_0",
        help="llama.cpp base weights to compare, comma-separated ('': none)",
    )
    parser.add_argument(
        "--decode-weights",
        default="full",
        help="torch engines to compare (serve.torch.decode_weights), comma-separated: full,int8",
    )
    parser.add_argument(
        "--fusion",
        default="in_context",
        choices=["in_context", "kv"],
        help="covid: the untrained adapter's fusion (kv runs on torch only)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from components.core.serve_params import LlamaCppSettings, TorchEngineSettings
    from components.serving.answerer import Answerer

    work = Path(tempfile.mkdtemp(prefix="engines-"))
    if args.project:
        adapter, index, rows = project_source(args.project, args.questions)
        source = "sample"
    else:
        adapter, index, rows = covid_source(work, args.questions, args.fusion)
        source = "covid" if args.fusion == "in_context" else f"covid-{args.fusion}"
    engines = {}
    for decode in args.decode_weights.split(","):
        name = "torch" if decode == "full" else f"torch-{decode}"
        settings = TorchEngineSettings(decode_weights=decode)
        engines[name] = Answerer(adapter, index, prefix_entries=64, torch_engine=settings)
    for weights in filter(None, args.weights.split(",")):
        settings = LlamaCppSettings(threads=args.threads, weights=weights)
        engines[f"llamacpp-{weights}"] = Answerer(
            adapter, index, prefix_entries=64, engine="llamacpp", llamacpp=settings
        )
    first = next(iter(engines.values()))
    retriever = first.retriever
    hits = retriever.retrieve([q for q, _ in rows], first.k)
    report: dict[str, Any] = {
        "source": source,
        "questions": len(rows),
        "machine": platform.processor() or platform.machine(),
    }
    for k in (1, 3):
        chosen = list(range(min(args.timed * 2, len(rows))))
        build = first.prompt
        prompts = [build(rows[i][0], retriever.retrieve([rows[i][0]], k)[0]) for i in chosen[0::2]]
        alternates = [build(rows[i][0], retriever.retrieve([rows[i][0]], k)[0]) for i in chosen[1::2]]
        n = min(len(prompts), len(alternates))
        tokens = [len(first.model.tokenizer(p)["input_ids"]) for p, _ in prompts[:n]]
        report[f"speed_{k}_passages"] = {
            "prompt_tokens_p50": median(tokens),
            **speed(engines, prompts[:n], alternates[:n]),
        }
    report["quality"] = quality(engines, rows, hits, 24)
    print_tables(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"generator_engines_{args.label or source}.json").write_text(json.dumps(report, indent=2))


def print_tables(report: dict) -> None:
    print(f"\n{report['source']}: {report['questions']} questions\n")
    print(
        "| engine | passages | prompt tokens p50 | first token ms | 24-token answer ms | decode tokens/s "
        "| 24 tokens, passages reused ms | answer as served, passages reused ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for k in (1, 3):
        block = report[f"speed_{k}_passages"]
        for name, s in block.items():
            if name == "prompt_tokens_p50":
                continue
            print(
                f"| {name} | {k} | {block['prompt_tokens_p50']:.0f} | {s['first_token_ms']:.0f} "
                f"| {s['answer_24_ms']:.0f} | {s['decode_tokens_per_s']:.0f} "
                f"| {s['answer_24_reused_ms']:.0f} | {s['answer_served_reused_ms']:.0f} |"
            )
    q = report["quality"]
    print("\n| engine | EM | F1 | answers identical to torch's |\n|---|---:|---:|---:|")
    for name, row in q.items():
        if name != "differing":
            print(f"| {name} | {row['em']:.3f} | {row['f1']:.3f} | {row['identical_to_torch']:.1%} |")


if __name__ == "__main__":
    main()
