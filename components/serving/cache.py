"""Two cache tiers: an in-process LRU with TTL (L1) and a shared Redis tier (L2).

Every key holds the adapter and index versions, so a promotion can never serve a result of the
previous pair. A Redis that is down or slow counts as a miss: the request is answered, not
failed, and the error shows in the metrics. Each L2 call is one attempt bounded by
`l2_timeout_seconds` (redis-py's retries are off), and after a failure L2 is skipped for
`l2_pause_seconds`, so an outage costs one timeout per pause rather than several per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable
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
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            self.l2 = redis.Redis.from_url(
                settings.redis_url,
                socket_timeout=settings.l2_timeout_seconds,
                socket_connect_timeout=settings.l2_timeout_seconds,
                retry=Retry(NoBackoff(), 0),  # one attempt: a miss is cheaper than a retry
            )
        self.paused_until = 0.0  # L2 is skipped until then, after a failure

    async def _l2(self, kind: str, call: Awaitable[Any]) -> tuple[bool, Any]:
        """(succeeded, result) of one L2 call within `l2_timeout_seconds`; a failure is counted,
        logged and pauses L2 for `l2_pause_seconds`."""
        if time.monotonic() < self.paused_until:
            call.close()  # never awaited: the coroutine is dropped
            self.metrics.cache_lookups.labels("l2", kind, "skipped").inc()
            return False, None
        try:
            return True, await asyncio.wait_for(call, self.settings.l2_timeout_seconds)
        except Exception as exc:  # noqa: BLE001 - any Redis failure is a miss, never a failed request
            self.paused_until = time.monotonic() + self.settings.l2_pause_seconds
            self.metrics.cache_lookups.labels("l2", kind, "error").inc()
            log.warning("L2 cache unavailable (%s): %s", type(exc).__name__, exc)
            return False, None

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
        reached, raw = await self._l2(kind, self.l2.get(key))
        if not reached:
            return None, None
        self.metrics.cache_lookups.labels("l2", kind, "miss" if raw is None else "hit").inc()
        if raw is None:
            return None, None
        value = orjson.loads(raw)
        if l1 is not None:
            l1[key] = value
        return value, "l2"

    async def put(self, kind: str, key: str, value: Any) -> None:
        """Store a value in L1 and, when configured, in Redis."""
        if self.l1[kind] is not None:
            self.l1[kind][key] = value
        if self.l2 is None:
            return
        await self._l2(kind, self.l2.set(key, orjson.dumps(value), ex=self.settings.l2_ttl_seconds))

    async def close(self) -> None:
        """Close the Redis connection."""
        if self.l2 is not None:
            await self.l2.aclose()
