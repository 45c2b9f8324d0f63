"""95% bootstrap intervals over questions, for one system's mean and for paired differences."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A mean over questions with its percentile-bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int

    def as_dict(self, name: str) -> dict[str, float]:
        """`{name, name_lo, name_hi}` for a metrics file."""
        return {name: self.mean, f"{name}_lo": self.low, f"{name}_hi": self.high}

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap(
    values: list[float], seed: int = 0, samples: int = BOOTSTRAP_SAMPLES, level: float = 0.95
) -> Estimate:
    """The mean of `values` and the percentile interval of the means of `samples` resamples
    (with replacement, same size). No values: a zero estimate over n=0."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return Estimate(0.0, 0.0, 0.0, 0)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Estimate(float(data.mean()), float(low), float(high), int(data.size))


def paired_difference(
    ours: list[float], theirs: list[float], seed: int = 0, samples: int = BOOTSTRAP_SAMPLES
) -> Estimate:
    """Mean of `ours - theirs` per question with its bootstrap interval: the same questions are
    resampled for both systems, so what they share (hard questions) cancels out."""
    if len(ours) != len(theirs):
        raise ValueError(f"paired scores need the same questions: {len(ours)} vs {len(theirs)}")
    return bootstrap([a - b for a, b in zip(ours, theirs, strict=True)], seed, samples)
