"""Questions written by a teacher language model for answers picked in a chunk (RAFT-style data
generation, answer first: the answer is a verbatim span or sentence of the chunk, the teacher only
phrases the question)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

PROMPTS = {
    # the answer is a span (a number, name or code) of the passage
    "span": 'Passage:\n{passage}\n\nWrite one question about this passage whose answer is "{answer}". '
    "Reply with the question only.",
    # the answer is the whole text shown (a sentence): small teachers do better without the chunk
    "sentence": "{answer}\n\nWrite a question that is answered by the text above. "
    "Reply with the question only.",
}


@dataclass
class TeacherRun:
    """The teacher's questions (None where it gave none) and how long it took."""

    questions: list[str | None]
    seconds: float

    @property
    def pairs_per_second(self) -> float:
        """Question-answer pairs made per second."""
        return round(len(self.questions) / self.seconds, 3) if self.seconds else 0.0


def clean_question(text: str) -> str | None:
    """The first question in the teacher's reply, or None when there is none."""
    text = re.sub(r"^(?:question|q)\s*[:.]\s*", "", text.strip(), flags=re.IGNORECASE)
    line = text.split("\n")[0].strip().strip('"').strip()
    if "?" not in line:
        return None
    question = line[: line.index("?") + 1].strip()
    return question if len(question.split()) >= 3 else None


def ask_teacher(
    name: str,
    requests: list[tuple[str, str]],
    dtype: str = "float32",
    batch_size: int = 8,
    max_new_tokens: int = 40,
    answer: str = "span",
) -> TeacherRun:
    """One question for each (passage, answer) from the teacher model `name` (the built-in
    alias, a Hugging Face id or a local path), greedy, in batches, with a progress bar."""
    import torch
    from tqdm.auto import tqdm

    from components.adapters.base_model import load_base_model

    started = time.perf_counter()
    if not requests:
        return TeacherRun([], 0.0)
    model, tokenizer = load_base_model(name, dtype)
    tokenizer.padding_side = "left"
    prompts = [_prompt(tokenizer, PROMPTS[answer].format(passage=p, answer=a)) for p, a in requests]
    questions: list[str | None] = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(prompts), batch_size), desc="teacher questions", unit="batch"):
            batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False)  # fmt: skip
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            new = out[:, batch["input_ids"].shape[1] :]
            questions += [clean_question(tokenizer.decode(row, skip_special_tokens=True)) for row in new]
    return TeacherRun(questions, time.perf_counter() - started)


def _prompt(tokenizer, user: str) -> str:  # noqa: ANN001
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{user}\nQuestion:"


class CachedTeacher:
    """The teacher as the synthesize stage calls it: loaded on first use, each (passage, answer)
    asked once per run, its seconds summed."""

    def __init__(self, name: str, dtype: str = "float32", batch_size: int = 8, answer: str = "span") -> None:
        self.name, self.dtype, self.batch_size, self.answer = name, dtype, batch_size, answer
        self.cache: dict[tuple[str, str], str | None] = {}
        self.seconds = 0.0

    def __call__(self, requests: list[tuple[str, str]]) -> list[str | None]:
        """Answers of the teacher for (system, user) requests, from the cache where it has them."""
        new = sorted({r for r in requests if r not in self.cache})
        if new:
            run = ask_teacher(self.name, new, self.dtype, self.batch_size, answer=self.answer)
            self.cache.update(zip(new, run.questions, strict=True))
            self.seconds += run.seconds
        return [self.cache[r] for r in requests]
