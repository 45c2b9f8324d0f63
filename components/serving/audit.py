"""The answer audit log and the rolling answer quality of each served adapter.

Every answer the service gives (full path, fast path, streamed) is one JSON line: time, endpoint,
the key's id (a hash, never the key), the question's hash (its text only with
`serve.audit.questions`), the adapter and its versions, the source chunk ids, the cache tier,
latency, answer support and abstention. Files rotate at `max_mb`. Fresh answers also feed two
gauges per adapter over the last `window` answers, `retro_answer_support{model}` and
`retro_abstention_rate{model}`, so a dashboard shows quality drifting after a promotion.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

import orjson

from components.core.serve_params import AuditSettings
from components.evaluation.metrics import answer_support
from components.serving.metrics import ServingMetrics


@dataclass(frozen=True)
class Caller:
    """Who asked, for the audit log: the endpoint and the API key's id."""

    endpoint: str
    key_id: str
    started: float


def key_id(key: str | None) -> str:
    """A stable id of an API key that does not reveal it ("open" when the service has no keys)."""
    return "open" if key is None else "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def caller(endpoint: str, key: str | None) -> Caller:
    """Who called which endpoint, with the key's id (never the key) and the start time."""
    return Caller(endpoint, key_id(key), time.perf_counter())


class AuditLog:
    """Appends one line per answer and keeps the rolling quality gauges of each adapter."""

    def __init__(self, settings: AuditSettings, metrics: ServingMetrics, folder: Path = Path(".")) -> None:
        """Lines go to `settings.path`, under `folder` (the download folder) when relative."""
        self.settings, self.metrics = settings, metrics
        self.logger: logging.Logger | None = None
        if settings.path:
            path = Path(folder) / settings.path.replace("{pid}", str(os.getpid()))
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = RotatingFileHandler(
                path, maxBytes=int(settings.max_mb * 2**20), backupCount=settings.backups, encoding="utf-8"
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.logger = logging.getLogger(f"retro.audit.{id(self)}")
            self.logger.propagate, self.logger.handlers = False, [handler]
            self.logger.setLevel(logging.INFO)
        self.recent: dict[str, deque] = {}

    def record(
        self, who: Caller | None, model: str, question: str, result: dict[str, Any], texts: list[str] | None
    ) -> None:
        """One answer: `result` as the client got it, `texts` its passages (None for a cached
        answer, whose support was counted when it was first given)."""
        if who is None:
            return
        abstained = bool(result.get("abstained"))
        support = None if texts is None or abstained else answer_support(result.get("answer", ""), texts)
        if texts is not None:
            self._rolling(model, support, abstained)
        if self.logger is None:
            return
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "endpoint": who.endpoint,
            "key_id": who.key_id,
            "question_sha256": hashlib.sha256(question.encode()).hexdigest(),
            "model": model,
            "adapter_version": result.get("adapter_version"),
            "index_version": result.get("index_version"),
            "sources": [s.get("chunk_id") for s in result.get("sources", [])],
            "cache": result.get("cache"),
            "latency_ms": round((time.perf_counter() - who.started) * 1000, 2),
            "support": support,
            "abstained": abstained,
            "reason": result.get("reason"),
        }
        if self.settings.questions:
            line["question"] = question
        self.logger.info(orjson.dumps(line).decode())

    def _rolling(self, model: str, support: float | None, abstained: bool) -> None:
        recent = self.recent.setdefault(model, deque(maxlen=self.settings.window))
        recent.append((support, abstained))
        supported = [s for s, _ in recent if s is not None]
        if supported:
            self.metrics.answer_support.labels(model).set(sum(supported) / len(supported))
        self.metrics.abstention_rate.labels(model).set(sum(a for _, a in recent) / len(recent))

    def close(self) -> None:
        """Close the log's files."""
        if self.logger is not None:
            for handler in self.logger.handlers:
                handler.close()
