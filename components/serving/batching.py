"""Dynamic batching of concurrent requests into one model call.

A request alone goes through at once; when other requests are in flight (`in_flight()`, counted
by the app) the first one waits up to `max_wait_ms` for them, and up to `max_batch` requests share
one call. Requests are only batched with requests for the same loaded pair, so a promotion never
mixes versions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """`await submit(owner, item)` returns `run(owner, [items...])[i]` for this item."""

    def __init__(
        self,
        run: Callable[[Any, list[T]], list[R]],
        executor: ThreadPoolExecutor,
        max_batch: int,
        max_wait_ms: float,
        on_batch: Callable[[int], None] | None = None,
        in_flight: Callable[[], int] = lambda: 0,
    ) -> None:
        self.run, self.executor = run, executor
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.on_batch, self.in_flight = on_batch, in_flight
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, owner: Any, item: T) -> R:
        """Queue an item and wait for its result from the next batch."""
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._serve())
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((owner, item, future))
        return await future

    async def _collect(self) -> list[tuple[Any, T, asyncio.Future]]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if self.in_flight() <= len(batch) or remaining <= 0:  # nobody else is coming
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            groups: dict[int, list[tuple[Any, T, asyncio.Future]]] = {}
            for entry in batch:
                groups.setdefault(id(entry[0]), []).append(entry)
            for group in groups.values():
                owner, items = group[0][0], [item for _, item, _ in group]
                if self.on_batch is not None:
                    self.on_batch(len(items))
                try:
                    results = await loop.run_in_executor(self.executor, self.run, owner, items)
                except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                    results, failure = [None] * len(group), exc
                else:
                    failure = None
                for (_, _, future), result in zip(group, results, strict=True):
                    if future.done():  # the client went away
                        continue
                    if failure is None:
                        future.set_result(result)
                    else:
                        future.set_exception(failure)
