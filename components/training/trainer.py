"""The supervised loop: answer tokens are the targets, prompt tokens are masked out.

Works on a RetroModel in any fusion mode: `in_context` writes the passages into the prompt, the
fusion modes pass them as memory; encoder-decoder models get the prompt as encoder input.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from components.adapters.precision import cpu_has_bf16, model_device
from components.adapters.prompting import answer_suffix
from components.adapters.retro_model import RetroModel
from components.training.budget import EarlyStopping
from components.training.examples import Example

Row = tuple[list[int], list[int]]
logger = logging.getLogger(__name__)

# Batches are padded to a multiple of PAD_MULTIPLE tokens, and the logits are kept from a
# position that is a multiple of KEEP_MULTIPLE, so training sees a few tensor shapes instead of one
# per batch length. Under bfloat16 autocast on the CPU, each new input shape of a linear layer
# leaves about 0.5 MB of native memory behind (forward and backward, oneDNN's kernel cache off),
# so a process that trains update after update on new prompt lengths grows without end
# (BENCHMARKS: "Memory across updates"). Padding is masked and ignored by the loss.
PAD_MULTIPLE = 16
KEEP_MULTIPLE = 8


def encode(model: RetroModel, example: Example, max_length: int) -> Row:
    """(input ids, labels). Causal LMs: prompt + answer with -100 over the prompt, the prompt
    cut from the left when too long. Seq2seq: the prompt and the answer separately."""
    tokenizer = model.tokenizer
    prompt = tokenizer(model.prompt(example.question, example.passages), add_special_tokens=False)[
        "input_ids"
    ]
    target = tokenizer(example.answer + answer_suffix(tokenizer), add_special_tokens=False)["input_ids"]
    if model.is_seq2seq:
        return prompt[-max_length:], target
    prompt = prompt[-max(1, max_length - len(target)) :]
    return prompt + target, [-100] * len(prompt) + target


def _pad(seqs: list[list[int]], value: int, multiple: int = 1) -> torch.Tensor:
    width = -(-max(len(s) for s in seqs) // multiple) * multiple  # the longest, rounded up
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate(
    model: RetroModel, rows: list[Row], examples: list[Example], multiple: int = PAD_MULTIPLE
) -> dict:
    """Right-padded tensors for a batch, each padded to a multiple of `multiple` tokens, plus
    the passages when the model fuses them as memory."""
    pad_id = model.tokenizer.pad_token_id
    ids = _pad([r[0] for r in rows], pad_id, multiple)
    batch = {
        "input_ids": ids,
        "attention_mask": _pad([[1] * len(r[0]) for r in rows], 0, multiple),
        "labels": _pad([r[1] for r in rows], -100, multiple),
    }
    if model.uses_memory:
        batch["passages"] = [e.passages for e in examples]
    return batch


def answer_loss(forward: Any, model: RetroModel, batch: dict) -> tuple[torch.Tensor, Any, dict]:
    """Answer loss of a collated batch; returns (loss, outputs, batch the outputs align with).

    Causal LMs compute logits only from the first position that predicts an answer token on
    (`logits_to_keep`): the vocabulary projection over the prompt is most of a step's cost
    otherwise (about 30% of a SmolLM2 step with three passages). The returned batch holds the
    labels cut the same way, so `answer_positions` indexes the returned logits. The first kept
    position is rounded down to a multiple of KEEP_MULTIPLE (a few shapes; see PAD_MULTIPLE).
    The mean token cross-entropy is the one the model computes itself from full logits.
    """
    labels = batch["labels"]
    targets = (labels[:, 1:] != -100).any(dim=0).nonzero()
    if not model.keeps_logits or not len(targets):
        outputs = forward(**batch)
        return outputs.loss, outputs, batch
    start = int(targets[0]) // KEEP_MULTIPLE * KEEP_MULTIPLE
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    outputs = forward(**inputs, logits_to_keep=labels.shape[1] - start)
    tail = labels[:, start:]
    logits = outputs.logits[:, :-1].float()
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tail[:, 1:].reshape(-1).to(logits.device), ignore_index=-100
    )
    return loss, outputs, {**batch, "labels": tail}


def example_key(example: Example) -> str:
    """Identifies an example with its current answer (a revised fact is a different example)."""
    return example.qid + "\x00" + example.answer


def batches_of(
    model: RetroModel, examples: list[Example], batch_size: int, max_length: int
) -> list[tuple[list[str], dict]]:
    """Examples in order as collated batches, each with its examples' keys."""
    out = []
    for start in range(0, len(examples), batch_size):
        part = examples[start : start + batch_size]
        rows = [encode(model, e, max_length) for e in part]
        out.append(([example_key(e) for e in part], collate(model, rows, part)))
    return out


def bf16_autocast_supported(device: torch.device) -> bool:
    """Does this device run bfloat16 matmuls natively? Without it (CPUs lacking AVX512-BF16 or AMX,
    e.g. AVX2-only ones) bf16 autocast is emulated and a training step gets many times slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def train(
    model: RetroModel,
    examples: list[Example],
    steps: int,
    batch_size: int = 4,
    lr: float = 1e-3,
    max_length: int = 384,
    seed: int = 0,
    warmup: int = 5,
    autocast_bf16: bool = True,
    replay: list[Example] | None = None,
    replay_ratio: float = 0.0,
    on_step: Callable[[int], None] | None = None,
    desc: str = "train",
    regularizer: Callable[[list[Example], dict, Any], torch.Tensor | None] | None = None,
    accelerator: Any | None = None,
    early_stopping: EarlyStopping | None = None,
    pad_multiple: int = PAD_MULTIPLE,
) -> dict[str, Any]:
    """Train the model's trainable parameters for `steps` batches; returns loss and timing.

    With `replay`, each batch holds about `replay_ratio` replayed examples beside new ones.
    `on_step(step)` runs after each optimiser step (AdaLoRA's budget update goes there).
    `regularizer(examples, batch, outputs)` adds a term to each batch's loss (EWC, distillation).
    With an `accelerator` (a process of `accelerate launch`), each process draws its own batches
    and DDP averages the gradients (components/training/distributed.py).
    With `early_stopping`, the loss on its validation examples is checked every `every` steps;
    training stops after `patience` checks without improvement and the best weights are kept.
    Batches are padded to a multiple of `pad_multiple` tokens (1: to their longest example).
    """
    if not examples:
        raise ValueError("no training examples")
    rank = accelerator.process_index if accelerator is not None else 0
    rng = random.Random(seed + rank)
    torch.manual_seed(seed)
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(model.parameter_groups(lr), lr=lr, weight_decay=0.0)
    forward, device = model, model_device(model)
    if accelerator is not None:
        forward, optimizer = accelerator.prepare(model, optimizer)
        device = accelerator.device
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    n_replay = round(batch_size * replay_ratio) if replay else 0
    cache: dict[str, Row] = {}

    def draw(pool: list[Example], n: int) -> list[Example]:
        return rng.sample(pool, k=min(n, len(pool))) if n else []

    def row(ex: Example) -> Row:
        key = example_key(ex)
        if key not in cache:
            cache[key] = encode(model, ex, max_length)
        return cache[key]

    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    use_bf16 = autocast_bf16 and bf16_autocast_supported(device)
    if autocast_bf16 and not use_bf16:
        logger.info("bf16 autocast skipped: %s has no native bfloat16 support; training in float32", device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
    stopper = early_stopping if early_stopping is not None and early_stopping.examples else None
    steps_run = 0
    for step in (bar := tqdm(range(steps), desc=desc, leave=False, disable=rank > 0)):
        picked = draw(examples, batch_size - n_replay) + draw(replay or [], n_replay)
        batch = collate(model, [row(e) for e in picked], picked, pad_multiple)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with amp:
            loss, outputs, aligned = answer_loss(forward, model, batch)
            if regularizer is not None:
                extra = regularizer(picked, aligned, outputs)
                if extra is not None:
                    loss = loss + extra
        if accelerator is not None:
            accelerator.backward(loss)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if on_step:
            on_step(step)
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        steps_run = step + 1
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if stopper is not None and stopper.due(steps_run, steps):
            with amp:
                held_out = validation_loss(model, stopper.examples, batch_size, row, pad_multiple)
                stopper.check(steps_run, held_out, params)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", val=f"{stopper.history[-1]:.3f}")
            model.train()
            if stopper.should_stop():
                break
    model.eval()
    if stopper is not None:
        stopper.restore_best(params)
    elapsed = time.perf_counter() - started
    tail = losses[-max(1, len(losses) // 5) :]
    return {
        "steps": steps_run,
        "planned_steps": steps,
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "seconds": elapsed,
        "seconds_per_step": elapsed / steps_run,
        "longest_tokens": max(len(ids) for ids, _ in cache.values()),  # activations grow with it
        "bf16_autocast": use_bf16,
        **(stopper.summary() if stopper is not None else {}),
    }


@torch.no_grad()
def validation_loss(
    model: RetroModel,
    examples: list[Example],
    batch_size: int,
    row: Callable[[Example], Row],
    pad_multiple: int = PAD_MULTIPLE,
) -> float:
    """Mean answer loss over `examples` (no gradients; the model in eval mode), in batches padded
    as training pads them."""
    model.eval()
    total = 0.0
    for start in range(0, len(examples), batch_size):
        part = examples[start : start + batch_size]
        batch = collate(model, [row(e) for e in part], part, pad_multiple)
        total += answer_loss(model, model, batch)[0].item() * len(part)
    return total / len(examples)
