"""Adapter training and generation at model scale: peak memory, tokens/s and step time of full
fine-tuning against LoRA (bf16, on a 4- or 8-bit base, with gradient checkpointing), and batched
generation for the serving engine.

    python benchmarks/gpu_scale.py --device cuda --sizes 135m,1b,8b,70b     # one H200, under 5 minutes
    python benchmarks/gpu_scale.py --device cpu --sizes 135m --seq-len 128 --steps 1   # the CPU mode

Each model is built from its published configuration with random weights: nothing is
downloaded, and memory and speed do not depend on the weights' values. The script imports only
torch, transformers, peft and accelerate (plus bitsandbytes for the quantized rows), as the lent
GPU machine has them, and the project's torch-free `components/adapters/precision.py` for the
hardware checks. A row that does not fit or cannot run on the device is reported with its
reason, not dropped. Writes `<out>.json` and `<out>.md`.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.adapters.precision import LoadOptions, UnsupportedHardware, check_hardware  # noqa: E402

# published configurations (config.json of each model on the Hugging Face hub)
CONFIGS: dict[str, dict[str, Any]] = {
    "135m": {  # HuggingFaceTB/SmolLM2-135M-Instruct, the project's default base model
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True, "rope_theta": 100000.0,
    },
    "1b": {  # meta-llama/Llama-3.2-1B
        "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256, "tie_word_embeddings": True,
        "rope_theta": 500000.0,
    },
    "8b": {  # meta-llama/Llama-3.1-8B
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False, "rope_theta": 500000.0,
    },
    "70b": {  # meta-llama/Llama-3.1-70B
        "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
        "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False, "rope_theta": 500000.0,
    },
}  # fmt: skip
# method -> (trainable, quantization, gradient checkpointing)
METHODS: dict[str, tuple[str, str, bool]] = {
    "full": ("full", "none", False),
    "lora": ("lora", "none", False),
    "lora_gc": ("lora", "none", True),
    "lora_int8": ("lora", "int8", True),
    "lora_nf4": ("lora", "nf4", True),
}
LORA = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}  # params.yaml's adapter
ONLY_4BIT = {"70b"}  # 140 GB in bf16, 70 in int8 (made on the CPU, minutes): only the 4-bit row is tried


class PeakMemory:
    """Peak memory of a block: CUDA's allocator peak on a GPU; on the CPU the process's resident
    memory, sampled (it includes the Python process itself, about half a GB)."""

    def __init__(self, device: str) -> None:
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self) -> PeakMemory:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            import psutil

            process = psutil.Process()
            self.peak = process.memory_info().rss

            def sample() -> None:
                while not self._stop.wait(0.02):
                    self.peak = max(self.peak, process.memory_info().rss)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()


def _random_init(tensor: Any) -> Any:
    return tensor.normal_(0.0, 0.02)


def _quantized_linear(linear: Any, quantization: str, dtype: Any, device: str) -> Any:
    """A bitsandbytes layer holding `linear`'s weight (random, made on `device`) in 4 or 8 bits."""
    import bitsandbytes as bnb
    import torch

    # NF4 quantizes from wherever the weight is; int8 only on the move from the CPU
    made_on = device if quantization == "nf4" else "cpu"
    weight = _random_init(torch.empty(linear.out_features, linear.in_features, dtype=dtype, device=made_on))
    if quantization == "nf4":
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=False, compute_dtype=dtype,
                                  quant_type="nf4", compress_statistics=True, device="meta")  # fmt: skip
        layer.weight = bnb.nn.Params4bit(
            weight, requires_grad=False, quant_type="nf4", compress_statistics=True
        )
    else:
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=False,
                                    has_fp16_weights=False, device="meta")  # fmt: skip
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    return layer.to(device)  # bitsandbytes quantizes on the move


def build_model(size: str, dtype: Any, quantization: str, device: str) -> Any:
    """A Llama-architecture model of `size` with random weights on `device`; with `quantization`,
    built empty and filled layer by layer (a 70B model never exists in 16 bits)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**CONFIGS[size], max_position_embeddings=8192)
    if quantization == "none":
        with torch.device(device):
            return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    setattr(parent, name, _quantized_linear(child, quantization, dtype, device))
    for module in model.modules():  # embeddings, norms, the output head: real tensors in `dtype`
        for name, param in list(module.named_parameters(recurse=False)):
            if param.is_meta:
                value = torch.empty(param.shape, dtype=dtype, device=device)
                value = (
                    torch.ones_like(value) if "norm" in type(module).__name__.lower() else _random_init(value)
                )
                setattr(module, name, torch.nn.Parameter(value, requires_grad=False))
    if config.tie_word_embeddings:
        model.tie_weights()
    setattr(
        model, f"is_loaded_in_{4 if quantization == 'nf4' else 8}bit", True
    )  # as from_pretrained marks it
    return model.to(device).eval()


def trainable_model(size: str, method: str, device: str, dtype: Any) -> Any:
    """The model `method` trains: every weight (full) or a LoRA adapter, with the project's loader
    finishing it (kbit preparation, gradient checkpointing: components/adapters/precision.py)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from components.adapters.precision import finish_loading

    trainable, quantization, checkpointing = METHODS[method]
    dtype_name = str(dtype).removeprefix("torch.")
    options = LoadOptions(dtype=dtype_name, quantization=quantization,  # type: ignore[arg-type]
                          gradient_checkpointing=checkpointing, device=device)  # type: ignore[arg-type]  # fmt: skip
    check_hardware(options, torch.device(device))
    model = finish_loading(build_model(size, dtype, quantization, device), options, torch.device(device))
    if trainable == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **LORA))


def time_training(model: Any, device: str, batch: int, seq_len: int, steps: int) -> dict[str, float]:
    """Step time and tokens/s over `steps` AdamW steps after one warm-up step, on random tokens."""
    import torch

    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, seq_len), device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    step = sum(times[1:]) / max(1, len(times) - 1)
    return {
        "step_s": step,
        "tokens_per_s": batch * seq_len / step,
        "trainable": sum(p.numel() for p in params),
    }


def time_generation(
    model: Any, device: str, prompts: int, prompt_len: int, new_tokens: int
) -> dict[str, float]:
    """The torch serving engine's work (greedy `generate` on the adapter model, as RetroModel
    calls it for in-context adapters): answers/s for `prompts` at once, and the time to the
    first token of one prompt."""
    import torch

    model.eval()
    ids = torch.randint(3, model.config.vocab_size, (prompts, prompt_len), device=device)
    mask = torch.ones_like(ids)
    common = {"do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    with torch.inference_mode():
        model.generate(input_ids=ids[:1], attention_mask=mask[:1], max_new_tokens=2, **common)  # warm-up
        started = time.perf_counter()
        model.generate(input_ids=ids[:1], attention_mask=mask[:1], max_new_tokens=1, **common)
        first = time.perf_counter() - started
        started = time.perf_counter()
        budget = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
        model.generate(input_ids=ids, attention_mask=mask, **budget, **common)
        seconds = time.perf_counter() - started
    return {"ttft_s": first, "answers_per_s": prompts / seconds, "batch_s": seconds}


def _release(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def measure(run: Callable[[], dict[str, Any]], device: str) -> dict[str, Any]:
    """One row: its figures and peak memory, or the reason it could not run."""
    import torch

    try:
        with PeakMemory(device) as memory:
            figures = run()
        return {**figures, "peak_gb": memory.peak / 1e9, "status": "ok"}
    except UnsupportedHardware as error:
        return {"status": f"not run: {error}"}
    except torch.OutOfMemoryError:
        return {"status": "out of memory"}
    except (ImportError, RuntimeError, ValueError) as error:
        return {"status": f"failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"}
    finally:
        _release(device)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    rows = []
    for size in args.sizes:
        for method in args.methods:
            if size in ONLY_4BIT and METHODS[method][1] != "nf4":
                rows.append({"size": size, "method": method, "status": "not run: only nf4 fits the budget"})
                continue

            def train(size: str = size, method: str = method) -> dict[str, Any]:
                model = trainable_model(size, method, args.device, dtype)
                return time_training(model, args.device, args.batch, args.seq_len, args.steps)

            rows.append({"size": size, "method": method, **measure(train, args.device)})
            print(json.dumps(rows[-1]), flush=True)
        if size in args.serve_sizes:

            def serve(size: str = size) -> dict[str, Any]:
                model = trainable_model(size, "lora", args.device, dtype)
                return time_generation(model, args.device, args.concurrency, args.prompt_len, args.new_tokens)

            rows.append(
                {"size": size, "method": f"serve c={args.concurrency}", **measure(serve, args.device)}
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The table of BENCHMARKS.md: one row per size and method, full fine-tuning's peak beside."""
    full = {r["size"]: r["peak_gb"] for r in rows if r["method"] == "full" and r["status"] == "ok"}
    lines = [
        f"seq {args.seq_len} x batch {args.batch}, {args.steps} timed steps; device {args.device}; "
        f"serving: {args.concurrency} prompts of {args.prompt_len} tokens, {args.new_tokens} new tokens",
        "",
        "| size | method | trainable | peak GB | / full FT | step s | tokens/s | answers/s | TTFT s "
        "| status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def cell(row: dict[str, Any], key: str, form: str) -> str:
        return format(row[key], form) if key in row else "-"

    for r in rows:
        training = r["method"] in METHODS and "peak_gb" in r and r["size"] in full
        ratio = f"{r['peak_gb'] / full[r['size']]:.2f}" if training else "-"
        figures = [
            cell(r, "trainable", ","),
            cell(r, "peak_gb", ".2f"),
            ratio,
            cell(r, "step_s", ".3f"),
            cell(r, "tokens_per_s", ",.0f"),
            cell(r, "answers_per_s", ".1f"),
            cell(r, "ttft_s", ".3f"),
        ]
        lines.append(f"| {r['size']} | {r['method']} | {' | '.join(figures)} | {r['status']} |")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--sizes", type=lambda s: s.split(","), default=["135m", "1b", "8b", "70b"],
                        help=f"comma-separated, of {', '.join(CONFIGS)}")  # fmt: skip
    parser.add_argument("--methods", type=lambda s: s.split(","), default=list(METHODS),
                        help=f"comma-separated, of {', '.join(METHODS)}")  # fmt: skip
    parser.add_argument("--serve-sizes", type=lambda s: s.split(","), default=["135m", "1b"])
    parser.add_argument(
        "--seq-len", type=int, default=2048, help="tokens a training example (three passages)"
    )
    parser.add_argument("--batch", type=int, default=4, help="examples a step (adapter-train.batch_size)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--concurrency", type=int, default=32, help="prompts generated together")
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=24, help="serve.max_new_tokens")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_scale"))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.sizes) - set(CONFIGS)) + sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown size or method: {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse(argv)
    started = time.perf_counter()
    rows = run(args)
    machine = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu"
    report = {"date": date.today().isoformat(), "machine": machine, "torch": torch.__version__,
              "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
              "seconds": time.perf_counter() - started}  # fmt: skip
    table = markdown(rows, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(table)
    print(table)
    print(f"{report['seconds']:.0f} s; {args.out.with_suffix('.json')}, {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
