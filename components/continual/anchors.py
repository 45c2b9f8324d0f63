"""General anchors: closed-book questions answered by the base model, replayed beside the corpus.

An adapter trained only on "passages + question -> span" learns to copy spans, and asked without
passages it starts answering general questions with garbled spans of its own ("Who wrote Romeo
and Juliet?" -> "Julietanism"). Replaying a few general questions with the base model's own
greedy answers (the adapter switched off) keeps its closed-book behaviour where it was: sequence
level self-distillation on general samples, as in general-sample replay (GeRe, Zhang et al.
2025), with nothing stored but these answers.

The questions here are distinct from `benchmarks/general_questions.jsonl`, which measures the
effect.
"""

from __future__ import annotations

from components.adapters.generation import generate
from components.adapters.retro_model import RetroModel
from components.training.examples import Example

ANCHOR_QUESTIONS: tuple[str, ...] = (
    "What is the capital of Spain?",
    "What is the capital of Canada?",
    "What is the capital of Egypt?",
    "Which planet is closest to the Sun?",
    "How many minutes are there in an hour?",
    "How many months are there in a year?",
    "How many wheels does a bicycle have?",
    "What color are ripe bananas?",
    "What do cows drink?",
    "What is the chemical symbol for gold?",
    "Who wrote Hamlet?",
    "Who developed the theory of relativity?",
    "What is 10 minus 4?",
    "What is the opposite of up?",
    "What is the last month of the year?",
    "Which organ pumps blood through the body?",
    "What is the largest continent?",
    "What is the longest river in Africa?",
    "Which animal is known as the king of the jungle?",
    "What do caterpillars turn into?",
    "What is frozen water called?",
    "How many continents are there?",
    "What language is spoken in Brazil?",
    "What is the main ingredient of bread?",
)


def general_anchors(
    model: RetroModel, count: int, max_new_tokens: int = 40, batch_size: int = 8
) -> list[Example]:
    """The first `count` anchor questions with the base model's greedy closed-book answers (the
    adapter off, the same prompt the adapter sees without passages), as training examples. An
    answer cut by `max_new_tokens` keeps its complete sentences; one with none is left out."""
    if not 0 <= count <= len(ANCHOR_QUESTIONS):
        raise ValueError(f"general anchors: count {count} must be between 0 and {len(ANCHOR_QUESTIONS)}")
    questions = ANCHOR_QUESTIONS[:count]
    if not questions:
        return []
    prompts = [model.prompt(q, []) for q in questions]
    with model.base_only():
        answers = generate(model, prompts, max_new_tokens, batch_size, [[] for _ in questions])
    kept = [(q, _whole_sentences(a)) for q, a in zip(questions, answers, strict=True)]
    return [Example(f"anchor-{i}", q, a, "", []) for i, (q, a) in enumerate(kept) if a]


def _whole_sentences(answer: str) -> str:
    """`answer` up to its last sentence end; a short answer without one ("Paris") is whole."""
    answer = answer.strip()
    if answer.endswith((".", "!", "?")) or len(answer.split()) <= 4:
        return answer
    end = max(answer.rfind(". "), answer.rfind("! "), answer.rfind("? "))
    return answer[: end + 1] if end > 0 else ""
