"""An event sink that stores events in batches: whatever queued while the last batch was stored.

A link hands events over one at a time; under load they pile up while a batch commits, and the
next batch takes them all, so the cost of a transaction is shared by many events. When the hub
is idle a batch is one event and nothing waits. One consumer keeps the link's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from callbridge.domain.events import Event

log = logging.getLogger(__name__)

MAX_BATCH = 500
MAX_QUEUED = 20_000


class BatchingSink:
    def __init__(
        self,
        process: Callable[[Sequence[Event]], Awaitable[None]],
        *,
        max_batch: int = MAX_BATCH,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._process = process
        self._max_batch = max_batch
        # Bounded: a link that outruns the database waits here instead of growing memory.
        self._queue: asyncio.Queue[Event] = asyncio.Queue(max_queued)
        self._consumer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def __call__(self, event: Event) -> None:
        if self._consumer is None or self._consumer.done():
            self._consumer = asyncio.create_task(self._consume(), name="event-batches")
        self._idle.clear()
        await self._queue.put(event)

    async def _consume(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._process(batch)
            except Exception:
                # Events are not commands: log with ids and go on (CONVENTIONS 5).
                first = batch[0]
                log.exception(
                    "could not store %d events (first: %s of %s)", len(batch), first.kind, first.pbx
                )
            if self._queue.empty():
                self._idle.set()

    async def drain(self) -> None:
        """Wait until every event handed over so far has been processed."""
        await self._idle.wait()

    async def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(5):
                    await self.drain()
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
            self._consumer = None
