"""Batched greedy generation of short answers."""

from __future__ import annotations

import torch

from components.adapters.retro_model import RetroModel


@torch.inference_mode()
def generate(
    model: RetroModel,
    prompts: list[str],
    max_new_tokens: int = 16,
    batch_size: int = 8,
    passages: list[list[str]] | None = None,
    adapter_names: list[str] | None = None,
) -> list[str]:
    """Greedy continuations of each prompt, cut at the first line break.

    `passages` are fused as memory when the model's fusion mode uses memory (ignored otherwise:
    in-context prompts already hold them). `adapter_names` name each prompt's peft adapter (a
    model holding several: components/adapters/adapter_set.py).
    """
    tokenizer = model.tokenizer
    tokenizer.padding_side = "right" if model.is_seq2seq else "left"
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(
            prompts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
        )
        memory = passages[start : start + batch_size] if passages is not None and model.uses_memory else None
        per_row = (
            {} if adapter_names is None else {"adapter_names": adapter_names[start : start + batch_size]}
        )
        out = model.generate(
            **per_row,
            passages=memory,
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = out if model.is_seq2seq else out[:, batch["input_ids"].shape[1] :]
        for row in new_tokens:
            text = tokenizer.decode(row, skip_special_tokens=True).strip()
            answers.append(text.split("\n")[0].strip())
    return answers
