"""What a Redis outage adds to a request: the cache tiers' lookups with no L2, with L2 down
(connection refused) and with L2 hung (accepts connections, never answers), side by side.

    .venv/bin/python benchmarks/cache_outage.py [--requests 2000]

A request to /v1/answer looks up three kinds (answer, retrieval, embedding) and writes them on a
miss: six L2 calls. Each row times those six calls per simulated request through `TieredCache`
(components/serving/cache.py) with its defaults (l2_timeout_seconds 0.05, l2_pause_seconds 5),
and prints p50 / p99 / max in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.serving.cache import KINDS, TieredCache  # noqa: E402
from components.serving.metrics import ServingMetrics  # noqa: E402
from components.serving.settings import CacheSettings  # noqa: E402


def hung_server() -> int:
    server = socket.create_server(("127.0.0.1", 0))
    held: list = []

    def accept() -> None:
        while True:
            held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    return server.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def timings(redis_url: str | None, requests: int) -> list[float]:
    cache = TieredCache(CacheSettings(redis_url=redis_url, l1_entries=0), ServingMetrics())
    seconds = []
    for i in range(requests):
        began = time.perf_counter()
        for kind in KINDS:
            await cache.get(kind, f"k{i}")
            await cache.put(kind, f"k{i}", {"v": i})
        seconds.append(time.perf_counter() - began)
    await cache.close()
    return seconds


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    rows = {
        "no L2": None,
        "L2 down (connection refused)": f"redis://127.0.0.1:{closed_port()}/0",
        "L2 hung (never answers)": f"redis://127.0.0.1:{hung_server()}/0",
    }
    print("| L2 | p50 (ms) | p99 (ms) | max (ms) |")
    print("|---|---|---|---|")
    for name, url in rows.items():
        seconds = asyncio.run(timings(url, args.requests))
        p50, p99 = quantile(seconds, 0.5), quantile(seconds, 0.99)
        print(f"| {name} | {p50:.3f} | {p99:.3f} | {max(seconds) * 1000:.1f} |")


if __name__ == "__main__":
    main()
