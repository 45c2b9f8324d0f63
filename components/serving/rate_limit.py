"""A per-key rate limit (`serve.limits.requests_per_minute`, `serve.limits.burst`): a token bucket
for each API key (each client address when the service has no keys), in front of every `/v1/`
endpoint, the cached-answer fast path included. A request over the limit gets 429 with
`Retry-After` (whole seconds until a token is back) and the reason, in OpenAI's error shape on the
OpenAI-compatible paths. Buckets are per process: with `--workers N` each worker keeps its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from cachetools import LRUCache

from components.serving.limits import given_key

MAX_BUCKETS = 65_536  # clients remembered at once (the least recently seen are forgotten: full again)


class TokenBuckets:
    """`take(who)`: 0 when a request may go now, else the seconds until it may."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate, self.burst = per_minute / 60.0, burst
        self.buckets: LRUCache = LRUCache(MAX_BUCKETS)

    def take(self, who: str, now: float | None = None) -> float:
        """Take one token for `who`; returns the seconds to wait, 0.0 when allowed."""
        now = time.monotonic() if now is None else now
        tokens, last = self.buckets.get(who, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self.buckets[who] = (tokens - 1.0, now)
            return 0.0
        self.buckets[who] = (tokens, now)
        return (1.0 - tokens) / self.rate


class RateLimit:
    """ASGI middleware: the token bucket of the request's key (or client address) for `/v1/`."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        buckets: TokenBuckets,
        keyed: bool,
        openai_paths: tuple[str, ...],
        error_body: Callable[[int, str, str], dict],
    ) -> None:
        self.app, self.buckets, self.keyed = app, buckets, keyed
        self.openai_paths, self.error_body = openai_paths, error_body

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        """ASGI entry: refuse a caller over its rate with 429 and Retry-After."""
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        key = given_key(
            headers.get(b"x-api-key", b"").decode("latin-1") or None,
            headers.get(b"authorization", b"").decode("latin-1") or None,
        )
        who = f"key:{key}" if self.keyed and key else f"addr:{(scope.get('client') or ('?',))[0]}"
        wait = self.buckets.take(who)
        if not wait:
            await self.app(scope, receive, send)
            return
        retry = max(1, math.ceil(wait))
        reason = f"rate limit of {self.buckets.rate * 60:g} requests a minute reached; retry in {retry} s"
        body = (
            self.error_body(429, "too many requests", reason)
            if path in self.openai_paths
            else {"error": "too many requests", "reason": reason}
        )
        raw = orjson.dumps(body)
        sent = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            (b"retry-after", str(retry).encode()),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": sent})
        await send({"type": "http.response.body", "body": raw})
