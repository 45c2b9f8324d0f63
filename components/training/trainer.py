"""The supervised loop: answer tokens are the targets, prompt tokens are masked out."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from components.adapters.prompting import answer_suffix, build_prompt
from components.training.examples import Example


def encode(tokenizer, example: Example, max_length: int) -> tuple[list[int], list[int]]:  # noqa: ANN001
    """Token ids and labels (-100 over the prompt). Long contexts are cut from the left."""
    prompt = tokenizer(build_prompt(tokenizer, example.question, example.passages), add_special_tokens=False)[
        "input_ids"
    ]
    target = tokenizer(example.answer + answer_suffix(tokenizer), add_special_tokens=False)["input_ids"]
    prompt = prompt[-max(1, max_length - len(target)) :]
    ids = prompt + target
    return ids, [-100] * len(prompt) + target


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(labs)] = torch.tensor(labs)
        attention[i, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


def train(
    model,
    tokenizer,
    examples: list[Example],
    steps: int,
    batch_size: int = 4,  # noqa: ANN001
    lr: float = 1e-3,
    max_length: int = 384,
    seed: int = 0,
    warmup: int = 5,
    autocast_bf16: bool = True,
    replay: list[Example] | None = None,
    replay_ratio: float = 0.0,
    on_step: Callable[[int], None] | None = None,
    desc: str = "train",
) -> dict[str, float]:
    """Train the model's trainable parameters for `steps` batches; returns loss and timing.

    With `replay`, each batch holds about `replay_ratio` replayed examples beside new ones.
    `on_step(step)` runs after each optimiser step (AdaLoRA's budget update goes there).
    """
    if not examples:
        raise ValueError("no training examples")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * s / steps)),
    )
    n_replay = round(batch_size * replay_ratio) if replay else 0
    cache: dict[str, tuple[list[int], list[int]]] = {}

    def rows(pool: list[Example], n: int) -> list[tuple[list[int], list[int]]]:
        picked = rng.sample(pool, k=min(n, len(pool)))
        for ex in picked:
            if ex.qid + ex.answer not in cache:
                cache[ex.qid + ex.answer] = encode(tokenizer, ex, max_length)
        return [cache[ex.qid + ex.answer] for ex in picked]

    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if autocast_bf16 else contextlib.nullcontext()
    for step in (bar := tqdm(range(steps), desc=desc, leave=False)):
        batch = collate(
            rows(examples, batch_size - n_replay) + (rows(replay, n_replay) if n_replay else []),
            tokenizer.pad_token_id,
        )
        with amp:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if on_step:
            on_step(step)
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    tail = losses[-max(1, len(losses) // 5) :]
    return {
        "steps": steps,
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "seconds": time.perf_counter() - started,
        "seconds_per_step": (time.perf_counter() - started) / steps,
    }
