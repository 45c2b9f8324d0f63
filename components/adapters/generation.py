"""Batched greedy generation of short answers."""

from __future__ import annotations

import torch


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 16,
    batch_size: int = 8,  # noqa: ANN001
) -> list[str]:
    """Greedy continuations of each prompt, cut at the first line break."""
    answers: list[str] = []
    tokenizer.padding_side = "left"
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(
            prompts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        )
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        for row in out[:, batch["input_ids"].shape[1] :]:
            text = tokenizer.decode(row, skip_special_tokens=True).strip()
            answers.append(text.split("\n")[0].strip())
    return answers
