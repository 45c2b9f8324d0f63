"""The shared cache tier (Redis) down or hung: every L2 call is one attempt bounded by
`l2_timeout_seconds`, and after a failure L2 is skipped for `l2_pause_seconds`, so an outage costs
one timeout per pause, never a failed request or several timeouts per request."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from components.serving.cache import TieredCache
from components.serving.metrics import ServingMetrics
from components.serving.settings import CacheSettings


class HungRedis:
    """A TCP server that accepts connections and never answers (a Redis stuck mid-request)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.server.close()
        for connection in self.held:
            connection.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def lookups(metrics: ServingMetrics, result: str) -> float:
    labels = {"tier": "l2", "kind": "answer", "result": result}
    return metrics.registry.get_sample_value("retro_cache_lookups_total", labels) or 0.0


@pytest.mark.parametrize("outage", ["hung", "down"])
def test_an_outage_costs_one_bounded_attempt_then_l2_is_skipped(outage: str) -> None:
    hung = HungRedis() if outage == "hung" else None
    port = hung.port if hung else closed_port()
    settings = CacheSettings(redis_url=f"redis://127.0.0.1:{port}/0", l2_timeout_seconds=0.05)
    metrics = ServingMetrics()
    cache = TieredCache(settings, metrics)

    async def timed(call) -> float:  # noqa: ANN001
        began = time.perf_counter()
        await call
        return time.perf_counter() - began

    async def scenario() -> list[float]:
        first = await timed(cache.get("answer", "k1"))
        later = [await timed(cache.get("answer", f"k{i}")) for i in range(2, 6)]
        put = await timed(cache.put("answer", "k9", {"answer": "x"}))
        await cache.close()
        return [first, *later, put]

    try:
        seconds = asyncio.run(scenario())
    finally:
        if hung:
            hung.close()
    assert seconds[0] < 0.05 + 0.1  # one attempt within the timeout, no retries with backoff
    assert max(seconds[1:]) < 0.01  # paused: no more attempts for l2_pause_seconds
    assert lookups(metrics, "error") == 1 and lookups(metrics, "skipped") == 5
