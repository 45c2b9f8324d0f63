"""Two cache tiers: an in-process LRU with TTL (L1) and a shared Redis tier (L2).

Every key holds the adapter and index versions, so a promotion can never serve a result of the
previous pair. A Redis that is down or slow counts as a miss: the request is answered, not
failed, and the error shows in the metrics.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import orjson
from cachetools import TTLCache

from components.serving.metrics import ServingMetrics
from components.serving.settings import CacheSettings

log = logging.getLogger(__name__)
KINDS = ("embedding", "retrieval", "answer")


def cache_key(kind: str, versions: tuple[str, str], *parts: Any) -> str:
    """`retro:<kind>:a<adapter>:i<index>:<digest of the request parts>`."""
    digest = hashlib.sha256(orjson.dumps(parts)).hexdigest()[:32]
    return f"retro:{kind}:a{versions[0]}:i{versions[1]}:{digest}"


class TieredCache:
    """L1 (per process) in front of L2 (Redis, shared by replicas); values are JSON-able."""

    def __init__(self, settings: CacheSettings, metrics: ServingMetrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.l1 = {
            kind: TTLCache(settings.l1_entries, settings.l1_ttl_seconds) if settings.l1_entries else None
            for kind in KINDS
        }
        self.l2 = None
        if settings.redis_url:
            import redis.asyncio as redis

            self.l2 = redis.Redis.from_url(
                settings.redis_url,
                socket_timeout=settings.l2_timeout_seconds,
                socket_connect_timeout=settings.l2_timeout_seconds,
            )

    async def get(self, kind: str, key: str) -> tuple[Any, str | None]:
        """(value, tier) with tier "l1" or "l2", or (None, None) on a miss in every tier."""
        l1 = self.l1[kind]
        if l1 is not None:
            value = l1.get(key)
            self.metrics.cache_lookups.labels("l1", kind, "miss" if value is None else "hit").inc()
            if value is not None:
                return value, "l1"
        if self.l2 is None:
            return None, None
        try:
            raw = await self.l2.get(key)
        except Exception as exc:  # noqa: BLE001 - any Redis failure is a miss, never a failed request
            self.metrics.cache_lookups.labels("l2", kind, "error").inc()
            log.warning("L2 cache unavailable (%s): %s", type(exc).__name__, exc)
            return None, None
        self.metrics.cache_lookups.labels("l2", kind, "miss" if raw is None else "hit").inc()
        if raw is None:
            return None, None
        value = orjson.loads(raw)
        if l1 is not None:
            l1[key] = value
        return value, "l2"

    async def put(self, kind: str, key: str, value: Any) -> None:
        if self.l1[kind] is not None:
            self.l1[kind][key] = value
        if self.l2 is None:
            return
        try:
            await self.l2.set(key, orjson.dumps(value), ex=self.settings.l2_ttl_seconds)
        except Exception as exc:  # noqa: BLE001
            self.metrics.cache_lookups.labels("l2", kind, "error").inc()
            log.warning("L2 cache write failed (%s): %s", type(exc).__name__, exc)

    async def close(self) -> None:
        if self.l2 is not None:
            await self.l2.aclose()
