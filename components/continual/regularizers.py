"""Fixed-size defences against forgetting: online EWC and distillation from the previous version.

Both cost memory of a fixed size, whatever the number of tasks seen: EWC keeps one running
Fisher estimate and one anchor the size of the trainable parameters; distillation keeps the
previous version's top-k answer-token distributions for the (bounded) replay examples only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from components.adapters.retro_model import RetroModel

Batch = dict
"""What `components.training.trainer.collate` returns."""


def _named_trainable(model: RetroModel) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


class OnlineEWC:
    """Online elastic weight consolidation (Schwarz et al., 2018) over the trainable parameters.

    penalty = lambda / 2 * sum_i F_i (theta_i - theta*_i)^2, where F is a running diagonal Fisher
    estimate, F <- gamma * F + F_task after each task, and theta* the parameters after that task.
    """

    FILE = "ewc_state.safetensors"

    def __init__(self, weight: float, gamma: float = 0.9) -> None:
        self.weight, self.gamma = weight, gamma
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def penalty(self, model: RetroModel) -> torch.Tensor | None:
        """The EWC penalty of the model's current weights; None when there is nothing to anchor."""
        if not self.fisher or not self.weight:
            return None
        total = None
        for name, param in _named_trainable(model).items():
            if name in self.fisher:
                term = (self.fisher[name] * (param - self.anchor[name]) ** 2).sum()
                total = term if total is None else total + term
        return None if total is None else 0.5 * self.weight * total

    def consolidate(
        self, model: RetroModel, batches: list[Batch], loss_of: Callable[[Batch], torch.Tensor]
    ) -> None:
        """Fold the empirical Fisher of `batches` into the running estimate; anchor at the weights."""
        params = _named_trainable(model)
        fresh = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        model.train()
        for batch in batches:
            model.zero_grad(set_to_none=True)
            loss_of(batch).backward()
            for name, param in params.items():
                if param.grad is not None:
                    fresh[name] += param.grad.detach().float() ** 2 / len(batches)
        model.zero_grad(set_to_none=True)
        model.eval()
        for name, value in fresh.items():
            self.fisher[name] = self.gamma * self.fisher[name] + value if name in self.fisher else value
            self.anchor[name] = params[name].detach().float().clone()

    def save(self, folder: Path) -> None:
        """Write the Fisher estimates and anchor weights to `folder`."""
        tensors = {f"fisher.{n}": t for n, t in self.fisher.items()}
        tensors |= {f"anchor.{n}": t for n, t in self.anchor.items()}
        if tensors:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(Path(folder) / self.FILE))

    @classmethod
    def load(cls, folder: Path, weight: float, gamma: float) -> OnlineEWC:
        """Read the penalty saved in `folder`, or start an empty one."""
        ewc = cls(weight, gamma)
        path = Path(folder) / cls.FILE
        if path.exists():
            for key, value in load_file(str(path)).items():
                kind, name = key.split(".", 1)
                (ewc.fisher if kind == "fisher" else ewc.anchor)[name] = value
        return ewc


class Distillation:
    """Keeps the previous version's answers: a soft cross-entropy toward its top-k token
    distributions at the answer positions of replayed examples (recorded before the update)."""

    def __init__(self, weight: float, top_k: int = 16) -> None:
        self.weight, self.top_k = weight, top_k
        self.targets: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def record(self, model: RetroModel, keyed_batches: list[tuple[list[str], Batch]]) -> None:
        """Store top-k ids and probabilities per answer position, per example key."""
        model.eval()
        for keys, batch in keyed_batches:
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
            for row, key in enumerate(keys):
                positions = answer_positions(batch["labels"][row], model.is_seq2seq)
                probs = torch.softmax(logits[row, positions], dim=-1)
                top = probs.topk(self.top_k, dim=-1)
                self.targets[key] = (top.indices, top.values / top.values.sum(-1, keepdim=True))

    def loss(
        self, logits: torch.Tensor, labels: torch.Tensor, keys: list[str], seq2seq: bool = False
    ) -> torch.Tensor | None:
        """KL divergence to the stored teacher distributions of the rows that have one (None: no row has)."""
        terms = []
        for row, key in enumerate(keys):
            if key not in self.targets:
                continue
            ids, probs = self.targets[key]
            positions = answer_positions(labels[row], seq2seq)
            if len(positions) != len(ids):
                continue
            log_probs = torch.log_softmax(logits[row, positions].float(), dim=-1).gather(-1, ids)
            terms.append(-(probs * log_probs).sum(-1).mean())
        return self.weight * torch.stack(terms).mean() if terms else None


def combined(
    model: RetroModel, ewc: OnlineEWC | None, distillation: Distillation | None
) -> Callable[[list, Batch, object], torch.Tensor | None] | None:
    """One `regularizer(examples, batch, outputs)` for the trainer from the mechanisms in use."""
    from components.training.trainer import example_key

    if ewc is None and distillation is None:
        return None

    def regularizer(examples: list, batch: Batch, outputs: object) -> torch.Tensor | None:
        terms = []
        if ewc is not None:
            terms.append(ewc.penalty(model))
        if distillation is not None:
            keys = [example_key(e) for e in examples]
            terms.append(distillation.loss(outputs.logits, batch["labels"], keys, model.is_seq2seq))
        terms = [t for t in terms if t is not None]
        return torch.stack(terms).sum() if terms else None

    return regularizer


def answer_positions(labels: torch.Tensor, seq2seq: bool = False) -> torch.Tensor:
    """Logit positions that predict the answer tokens: the label positions themselves for
    encoder-decoders, one earlier for causal LMs (position t predicts token t + 1)."""
    if seq2seq:
        return (labels != -100).nonzero().squeeze(-1)
    return (labels[1:] != -100).nonzero().squeeze(-1)
