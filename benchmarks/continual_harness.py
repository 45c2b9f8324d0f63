"""A sequence of knowledge tasks learned one after another by several methods, side by side.

Each task is a corpus snapshot (`t001/`, `t002/`, ... from `make_corpus(tasks=N)`): new entities
and revisions of earlier facts; or, for real text, the next 20 abstracts of PubMedQA. After every
task each method is evaluated on held-out questions of every task so far, with their current
answers (a revised fact must be answered with its new value), which fills the accuracy matrix
R[i][j]: synthetic facts are asked in the phrasing they were not trained with, PubMedQA's
held-out abstracts' questions were never trained on. Accuracy on the training questions is
measured at the end, beside. The harness of `benchmarks/continual.py` (and its test); quick mode
trains a tiny random model, the test fixture in `tests/fixtures/tiny_model.py`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import json
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from components.adapters.base_model import load_base_model
from components.adapters.builder import build_retro_model
from components.adapters.generation import generate
from components.continual.anchors import general_anchors
from components.continual.metrics import accuracy_summary
from components.continual.regularizers import OnlineEWC
from components.continual.replay import ReplayBuffer
from components.continual.update import UpdateOptions, unchanged_pairs, update_adapter
from components.data.chunking import chunk_id, chunk_text, load_offsets
from components.data.synthetic import heldout_question
from components.embed.encoder import encode, resolve_embedder
from components.evaluation.gold import GoldFinder
from components.evaluation.metrics import exact_match, normalize_answer
from components.stores.retriever import Retriever
from components.training.examples import Example, with_retrieval

EMBEDDER = "all-MiniLM-L6-v2"
METHODS = (
    "ours",
    "ours_anchors",
    "lora_rag",
    "lora_rag_replay",
    "frozen",
    "osf_rag",
    "scratch",
    "rag",
    "naive",
    "replay",
    "osf",
)
LABELS = {
    "ours": "ours (LoRA + retrieval, updated with a replay reservoir; EWC/distillation as set)",
    "ours_anchors": "ours + general anchors (the base model's closed-book answers replayed)",
    "lora_rag": "LoRA + retrieval, sequential, no replay",
    "lora_rag_replay": "LoRA + retrieval, replay only",
    "frozen": "adapter frozen after task 1, index updated",
    "osf_rag": "peft OSF + retrieval",
    "scratch": "retrained from scratch on everything so far",
    "rag": "RAG, no adapter (the base model)",
    "naive": "naive LoRA, closed book",
    "replay": "LoRA + replay, closed book",
    "osf": "peft OSF, closed book",
}
RETRIEVAL = {"ours", "ours_anchors", "lora_rag", "lora_rag_replay", "frozen", "osf_rag", "scratch", "rag"}
REPLAY = {"replay", "ours", "ours_anchors", "lora_rag_replay"}
OSF = {"osf", "osf_rag"}
REGULARIZED = {"ours", "ours_anchors"}  # EWC, distillation, anchors as set; lora_rag_replay: never
DEFAULT_ANCHORS = 16  # ours_anchors' general anchors when --general-anchors is not given


@dataclass
class Task:
    name: str
    docs: dict[str, str]  # doc_id -> text of this snapshot
    answers: dict[str, dict]  # qa id -> item, current answers
    new: list[dict]  # items new or revised in this task
    eval_questions: dict[str, str] = field(default_factory=dict)  # qa id -> its held-out phrasing, if any
    held_out: set[str] = field(default_factory=set)  # qa ids never trained on (evaluated only)

    def trained(self) -> list[dict]:
        """The new items a method learns from (the held-out ones are only asked)."""
        return [it for it in self.new if it["id"] not in self.held_out]


@dataclass
class Settings:
    base_model: str
    steps: int = 20
    first_steps: int | None = None  # every adapter's budget on task 1, where it learns the task format
    lr: float = 1e-3
    batch_size: int = 4
    max_length: int = 256
    k: int = 2
    chunk_tokens: int = 0  # 0: every document one passage; N: the chunk stage's windows of N tokens
    chunk_overlap: int = 24  # tokens shared by consecutive windows (with chunk_tokens)
    lora: dict[str, Any] = field(default_factory=lambda: {"r": 8, "lora_alpha": 16})
    osf: dict[str, Any] = field(default_factory=lambda: {"target_modules": ["q_proj", "v_proj"]})
    replay_size: int = 32
    replay_ratio: float = 0.5
    ewc_weight: float = 0.0
    distill_weight: float = 0.0
    general_anchors: int = 0  # ours, ours_anchors: general questions with the base model's answers, replayed
    max_new_tokens: int = 12
    general_max_new_tokens: int = 16  # general questions' own answer length, whatever the sequence's
    eval_batch: int = 16
    seed: int = 0
    bf16: bool = False
    closed_book_steps: int | None = None  # steps per task for naive/replay/osf (default: `steps`)
    general_questions: list[dict] = field(default_factory=list)  # closed-book questions, no corpus
    eval_every: int = 1  # full R rows every N tasks (and at the end); the diagonal always
    scratch_every: int = 1  # "scratch" retrains every N tasks (and at the end); rows only then


def load_tasks(folder: Path) -> list[Task]:
    """The task snapshots under `folder`, each with the items it adds or revises; every fact is
    asked in R in its other phrasing (`heldout_question`), or as trained where it has none."""
    tasks: list[Task] = []
    previous: dict[str, dict] = {}
    for snapshot in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        docs = {
            p.relative_to(snapshot / "docs").with_suffix("").as_posix(): p.read_text()
            for p in sorted((snapshot / "docs").rglob("*.md"))
        }
        items = [json.loads(line) for line in (snapshot / "qa.jsonl").read_text().splitlines()]
        answers = {it["id"]: it for it in items}
        new = [it for it in items if previous.get(it["id"], {}).get("answer") != it["answer"]]
        asked = {it["id"]: other for it in items if (other := heldout_question(it))}
        tasks.append(Task(snapshot.name, docs, answers, new, asked))
        previous = answers
    return tasks


def pubmedqa_tasks(
    corpus: Path, tasks: int = 50, per_task: int = 20, held_out: int = 6, seed: int = 1
) -> list[Task]:
    """PubMedQA's abstracts in `tasks` tasks of `per_task` (a fixed shuffle by `seed`), each
    snapshot holding every abstract so far; `held_out` abstracts of each task have their
    question asked in R and never trained on (one question per abstract: no other phrasing)."""
    import random

    items = [json.loads(line) for line in (corpus / "qa.jsonl").read_text().splitlines()]
    rng = random.Random(seed)
    rng.shuffle(items)
    if tasks * per_task > len(items):
        raise ValueError(f"{tasks} tasks of {per_task} need {tasks * per_task} questions; {len(items)} exist")
    out: list[Task] = []
    docs: dict[str, str] = {}
    answers: dict[str, dict] = {}
    for t in range(tasks):
        part = items[t * per_task : (t + 1) * per_task]
        docs |= {it["doc_id"]: (corpus / "docs" / f"{it['doc_id']}.md").read_text() for it in part}
        answers |= {it["id"]: it for it in part}
        kept = {it["id"] for it in part[:held_out]}
        out.append(Task(f"p{t + 1:03d}", dict(docs), dict(answers), part, held_out=kept))
    return out


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise), so
    that a peak measured afterwards is the block's own and not what earlier work left behind."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRSS:
    """The highest resident set size of this process while the block runs (sampled every 10 ms)."""

    def __enter__(self) -> PeakRSS:
        release_free_memory()
        self.start = self.peak = psutil.Process().memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, psutil.Process().memory_info().rss)


def passages_of(task: Task, chunk_tokens: int = 0, overlap: int = 24) -> pd.DataFrame:
    """The chunk table a method indexes for `task` (chunk_id, doc_id, position, text): every
    document whole (`chunk_tokens` 0), or cut as the chunk stage cuts it, into windows of
    `chunk_tokens` embedder tokens sharing `overlap` (with `split_at_headings: false`, as the
    protocol's PubMedQA runs were made)."""
    rows = []
    for doc_id in sorted(task.docs):
        text = task.docs[doc_id]
        if not chunk_tokens:
            rows.append((chunk_id(doc_id, text), doc_id, 0, text))
            continue
        for c in _chunks(doc_id, text, chunk_tokens, overlap):
            rows.append((c.chunk_id, doc_id, c.position, c.text))
    return pd.DataFrame(rows, columns=["chunk_id", "doc_id", "position", "text"])


@functools.lru_cache(maxsize=200_000)
def _chunks(doc_id: str, text: str, chunk_tokens: int, overlap: int) -> tuple:
    """The chunk stage's windows of one document version (cached: most documents outlive a task)."""
    return tuple(
        chunk_text(doc_id, text, _embedder_offsets(), chunk_tokens, overlap, split_at_headings=False)
    )


@functools.cache
def _embedder_offsets():  # noqa: ANN202
    return load_offsets(resolve_embedder(EMBEDDER))


def _examples(
    items: list[dict], retriever: Retriever | None, gold: GoldFinder | None, k: int
) -> list[Example]:
    if retriever is None or gold is None:
        return [Example(it["id"], it["question"], it["answer"], it["doc_id"], []) for it in items]
    return with_retrieval(items, retriever, k, gold)


def anchor_count(method: str, settings: Settings) -> int:
    """How many general anchors a method replays: `settings.general_anchors` for ours (0 by
    default, as continual-update's), that or `DEFAULT_ANCHORS` for ours_anchors, none otherwise."""
    if method not in REGULARIZED:
        return 0
    return settings.general_anchors or (DEFAULT_ANCHORS if method == "ours_anchors" else 0)


class Learner:
    """One method's state across the sequence: model, index, replay reservoir, EWC estimate."""

    def __init__(self, method: str, settings: Settings, workdir: Path) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        self.method, self.s, self.workdir = method, settings, workdir
        self.model = None if method in ("scratch",) else self._fresh()
        self.retriever: Retriever | None = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.buffer = ReplayBuffer(settings.replay_size if method in REPLAY else 0, settings.seed)
        self.ewc = OnlineEWC(settings.ewc_weight) if method in REGULARIZED and settings.ewc_weight else None
        self.learned: dict[str, dict] = {}
        self._anchors: list[Example] | None = None

    def _fresh(self):  # noqa: ANN202
        import torch

        torch.manual_seed(self.s.seed)  # the adapter's initial weights follow the run's seed
        base, tokenizer = load_base_model(self.s.base_model)
        method, config = ("osf", self.s.osf) if self.method in OSF else ("lora", self.s.lora)
        return build_retro_model(base, tokenizer, method, config, max_trainable_share=None)

    def index(self, task: Task) -> pd.DataFrame | None:
        """Bring the index to this snapshot incrementally: changed documents get new chunk ids,
        so their superseded text is deleted and only the changed text is embedded. Returns the
        chunk table indexed (None for a method without retrieval)."""
        if self.method not in RETRIEVAL:
            return None
        chunks = passages_of(task, self.s.chunk_tokens, self.s.chunk_overlap)
        ids, texts = chunks["chunk_id"].tolist(), chunks["text"].tolist()
        payloads = [{"doc_id": d} for d in chunks["doc_id"]]
        text_of = dict(zip(ids, texts, strict=True))
        if self.retriever is None:
            self.retriever = Retriever.build(ids, texts, encode(texts), payloads, EMBEDDER)
            return chunks
        previous = self.retriever
        self.retriever, _ = previous.update(
            Path(tempfile.mkdtemp(dir=self.workdir)),
            task.name,
            ids,
            texts,
            payloads,
            lambda wanted: encode([text_of[w] for w in wanted]),
        )
        previous.close()
        return chunks

    def anchors(self) -> list[Example]:
        """Ours' general anchors (the base model's answers do not change: made once per run)."""
        if self._anchors is None:
            count = anchor_count(self.method, self.s)
            self._anchors = general_anchors(self.model, count) if count else []
        return self._anchors

    def _options(self, steps: int, step: int) -> UpdateOptions:
        s = self.s
        return UpdateOptions(
            steps=steps,
            lr=s.lr,
            batch_size=s.batch_size,
            max_length=s.max_length,
            seed=s.seed + step,
            bf16=s.bf16,
            replay_ratio=s.replay_ratio,
            distill_weight=s.distill_weight if self.method in REGULARIZED else 0.0,
        )

    def learn(self, task: Task, step: int) -> dict[str, float]:
        """Update on the task; returns wall time, peak RSS and training steps of the update."""
        s = self.s
        trained = task.trained()
        self.learned.update({it["id"]: it for it in trained})
        self.learned = current = {i: task.answers[i] for i in self.learned if i in task.answers}
        frozen = self.method == "frozen" and step > 0  # learns task 1 only; its index keeps up
        stats: dict[str, Any] = {}
        with PeakRSS() as rss:
            started = time.perf_counter()
            chunks = self.index(task)
            if self.method == "scratch":
                self.model = self._fresh()
                items = list(current.values())
                examples = _examples(items, self.retriever, GoldFinder(chunks), s.k)
                warmup = (s.first_steps or s.steps) - s.steps  # what a sequential learner spent on task 1
                steps = warmup + max(s.steps, round(s.steps * len(items) / max(len(trained), 1)))
                options = self._options(steps, step)
                stats = update_adapter(self.model, examples, [], options, desc="scratch")
            elif self.method != "rag" and trained and not frozen:
                unchanged = unchanged_pairs(self.buffer.items)
                self.buffer.refresh(current)
                retriever = self.retriever if self.method in RETRIEVAL else None
                gold = GoldFinder(chunks) if chunks is not None else None  # one finder for new and replay
                new = _examples(trained, retriever, gold, s.k)
                replay = _examples(self.buffer.items, retriever, gold, s.k) if self.method in REPLAY else []
                closed_book = self.method not in RETRIEVAL
                steps = s.closed_book_steps or s.steps if closed_book else s.steps
                options = self._options(s.first_steps or steps if step == 0 else steps, step)
                stats = update_adapter(
                    self.model, new, replay + self.anchors(), options, self.ewc, unchanged, desc=self.method
                )
                for item in trained:
                    self.buffer.add(item)
            seconds = time.perf_counter() - started
        return {
            "seconds": seconds,
            "peak_rss_mb": rss.peak / 2**20,
            "rss_before_mb": rss.start / 2**20,  # what stays between updates
            "longest_tokens": stats.get("longest_tokens", 0),  # the longest sequence trained on; 0: none
            "steps": stats.get("steps", 0),  # training steps this task (0: frozen, RAG, or skipped)
        }

    def footprint(self) -> dict[str, int]:
        """Trainable parameters and bytes of the saved adapter (0 for RAG, which has none)."""
        if self.method == "rag" or self.model is None:
            return {"parameters": 0, "adapter_bytes": 0}
        folder = Path(tempfile.mkdtemp(dir=self.workdir))
        self.model.save(folder, {"base_model": self.s.base_model, "method": self.method})
        size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        return {
            "parameters": sum(p.numel() for p in self.model.trainable_parameters()),
            "adapter_bytes": size,
        }

    def answer(
        self, items: list[dict], closed_book: bool = False, max_new_tokens: int | None = None
    ) -> list[tuple[str, list[tuple[str, str]]]]:
        """Predictions for `items`, each with the (doc_id, text) passages it was given (none
        when `closed_book`, or for a method without retrieval); answers of the sequence's length
        unless `max_new_tokens` is given."""
        if not items:
            return []
        if self.model is None:  # scratch before its first retraining
            return [("", []) for _ in items]
        retriever = None if closed_book else self.retriever
        hits = retriever.retrieve([it["question"] for it in items], self.s.k) if retriever else None
        given = [[(h.payload["doc_id"], h.payload["text"]) for h in row] for row in hits] if hits else None
        given = given or [[] for _ in items]
        passages = [[text for _, text in row] for row in given]
        prompts = [self.model.prompt(it["question"], p) for it, p in zip(items, passages, strict=True)]
        length = max_new_tokens or self.s.max_new_tokens
        out = generate(self.model, prompts, length, self.s.eval_batch, passages)
        return list(zip(out, given, strict=True))


def quick_setup(folder: Path, tasks: int = 5, seed: int = 1) -> tuple[list[Task], Settings]:
    """A small task sequence and a tiny random Llama trained on its vocabulary (quick mode)."""
    from components.adapters.prompting import WITH_CONTEXT, WITHOUT_CONTEXT
    from components.data.synthetic import make_corpus
    from tests.fixtures.tiny_model import build_tiny_model

    if not (folder / "tasks").is_dir():  # a resumed run reuses its corpus
        make_corpus(
            folder / "tasks",
            seed=seed,
            tasks=tasks,
            entities_per_task=2,
            revisions_per_task=1,
            test_share=0.0,
        )
    texts = [p.read_text() for p in (folder / "tasks").rglob("*.md")]
    texts += [line for p in (folder / "tasks").rglob("qa.jsonl") for line in p.read_text().splitlines()]
    texts += [WITH_CONTEXT, WITHOUT_CONTEXT, "Context: Question: Answer: [1] [2]"]
    model = build_tiny_model(folder / "tiny-llama", texts)
    settings = Settings(
        base_model=str(model),
        steps=80,
        lr=1e-2,
        lora={"r": 16, "lora_alpha": 32, "target_modules": "all-linear"},
        osf={"target_modules": ["q_proj", "v_proj"], "effective_rank": 56},
        max_new_tokens=6,
    )
    return load_tasks(folder / "tasks"), settings


def _asked(task: Task, items: list[dict]) -> list[dict]:
    """`items` with the question R asks of each (its held-out phrasing where it has one)."""
    return [{**it, "question": task.eval_questions.get(it["id"], it["question"])} for it in items]


def run_sequence(method: str, tasks: list[Task], settings: Settings, workdir: Path) -> dict[str, Any]:
    """Learn `tasks` in order with `method`: the accuracy matrix on held-out questions, each
    evaluated fact's final outcome, training and general-capability accuracy, per-task costs."""
    learner = Learner(method, settings, workdir)
    introduced: dict[str, int] = {}
    for j, task in enumerate(tasks):
        for item in task.new:
            introduced.setdefault(item["id"], j)
    held_out = set().union(*(t.held_out for t in tasks))
    evaluated = {q: j for q, j in introduced.items() if not held_out or q in held_out}
    r = np.full((len(tasks), len(tasks)), np.nan)
    per_task, correct = [], {}
    last = len(tasks) - 1
    for i, task in enumerate(tasks):
        if method == "scratch" and i != last and (i + 1) % settings.scratch_every:
            learner.learned.update({it["id"]: it for it in task.trained()})  # seen, retrained later
            per_task.append(
                {
                    "task": task.name,
                    "seconds": 0.0,
                    "peak_rss_mb": float("nan"),
                    "rss_before_mb": float("nan"),
                    "steps": 0,
                    **learner.footprint(),
                }
            )
            continue
        cost = learner.learn(task, i)
        full_row = i == last or (i + 1) % settings.eval_every == 0
        current = [
            task.answers[q]
            for q, j in evaluated.items()
            if (j <= i if full_row else j == i) and q in task.answers
        ]
        predictions = learner.answer(_asked(task, current))
        correct = {
            it["id"]: exact_match(pred, it["answer"])
            for it, (pred, _) in zip(current, predictions, strict=True)
        }
        for j in range(i + 1) if full_row else [i]:
            scores = [correct[it["id"]] for it in current if evaluated[it["id"]] == j]
            r[i, j] = float(np.mean(scores)) if scores else np.nan
        per_task.append({"task": task.name, **cost, **learner.footprint()})
    trained = [tasks[-1].answers[q] for q in learner.learned if q in tasks[-1].answers]
    trained_answers = learner.answer(trained)
    general, general_answers = general_outcomes(learner, settings.general_questions)
    return {
        "method": method,
        "seed": settings.seed,
        "R": r.tolist(),
        **accuracy_summary(r),
        "final": correct,
        "task_of": {q: evaluated[q] for q in correct},
        "training_accuracy": _exact_share([it["answer"] for it in trained], trained_answers),
        "general": general,
        "general_answers": general_answers,
        "general_accuracy": float(np.mean(list(general.values()))) if general else float("nan"),
        "per_task": per_task,
        "revised": _revised_checks(learner, tasks),
        "settings": run_settings(settings),
    }


def run_settings(settings: Settings) -> dict[str, Any]:
    """What a run was trained and asked with (not its seed, nor the general questions' text)."""
    return {k: v for k, v in asdict(settings).items() if k not in ("seed", "general_questions")}


def _exact_share(golds: list[str], predictions: list[tuple[str, list]]) -> float:
    """The share of `predictions` (answer, passages) that exactly match their gold; NaN for none."""
    if not golds:
        return float("nan")
    return float(np.mean([exact_match(p, g) for g, (p, _) in zip(golds, predictions, strict=True)]))


def general_outcomes(learner: Learner, questions: list[dict]) -> tuple[dict[str, float], dict[str, str]]:
    """Closed-book questions that need no corpus (`general_questions.jsonl`): 1 where the answer
    contains one of the accepted answers (normalised), else 0, by question; and the answers."""
    if not questions:
        return {}, {}
    asked = [{"question": q["question"]} for q in questions]
    answers = learner.answer(asked, closed_book=True, max_new_tokens=learner.s.general_max_new_tokens)
    out, said = {}, {}
    for q, (pred, _) in zip(questions, answers, strict=True):
        said[q["question"]] = pred
        normalized = f" {normalize_answer(pred)} "
        out[q["question"]] = float(any(f" {normalize_answer(a)} " in normalized for a in q["answers"]))
    return out, said


def _revised_checks(learner: Learner, tasks: list[Task]) -> dict[str, float]:
    """For facts revised during the sequence: answered with the new value (asked in the held-out
    phrasing)? old text retrieved?"""
    first: dict[str, str] = {}
    for task in tasks:
        for item in task.new:
            first.setdefault(item["id"], item["answer"])
    final = tasks[-1].answers
    revised = [(final[q], old) for q, old in first.items() if q in final and final[q]["answer"] != old]
    if not revised:
        return {"count": 0}
    items = [item for item, _ in revised]
    answered = learner.answer(_asked(tasks[-1], items))
    as_trained = learner.answer(items)
    pairs = list(zip(revised, answered, strict=True))
    old_retrieved = [
        any(d == item["doc_id"] and old in text for d, text in given) for (item, old), (_, given) in pairs
    ]

    def share(predictions: list[tuple[str, list]], new: bool) -> float:
        return _exact_share([item["answer"] if new else old for item, old in revised], predictions)

    return {
        "count": len(revised),
        "answered_new_value": share(answered, new=True),
        "answered_old_value": share(answered, new=False),
        "trained_phrasing_new_value": share(as_trained, new=True),
        "trained_phrasing_old_value": share(as_trained, new=False),
        "old_value_retrieved": float(np.mean(old_retrieved)) if learner.retriever else float("nan"),
    }
