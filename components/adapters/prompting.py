"""Prompts for answering with and without retrieved passages."""

from __future__ import annotations

WITH_CONTEXT = "Answer the question with the exact short phrase from the context. Give only the answer."
WITHOUT_CONTEXT = "Answer the question with a short phrase. Give only the answer."


def build_prompt(tokenizer, question: str, passages: list[str] | None) -> str:  # noqa: ANN001
    """The text before the answer; uses the tokenizer's chat template when it has one."""
    if passages:
        context = "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, start=1))
        system, user = WITH_CONTEXT, f"Context:\n{context}\n\nQuestion: {question}"
    else:
        system, user = WITHOUT_CONTEXT, f"Question: {question}"
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{system}\n\n{user}\nAnswer:"


def context_prefix(prompt: str) -> str | None:
    """The part of an in-context prompt before the question (instructions and passages), or None
    when the prompt has no passages; its key/values depend only on the passages, not the question."""
    if "Context:\n" not in prompt:
        return None
    cut = prompt.rfind("\n\nQuestion: ")
    return prompt[:cut] if cut > 0 else None


def answer_suffix(tokenizer) -> str:  # noqa: ANN001
    """What follows a training answer: the end-of-turn token, so generation knows when to stop."""
    return tokenizer.eos_token or ""
