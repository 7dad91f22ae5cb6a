"""In-process publish/subscribe for events that leave a unit of work (after commit).

Topics are plain strings (``call``, ``presence``, ``user:<id>``); payloads are JSON-ready dicts.
A Redis implementation with the same interface is used when ``CALLBRIDGE_REDIS_URL`` is set.
Subscribers get their own bounded queue: a slow subscriber loses its oldest messages, never
blocks publishers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any, Protocol

log = logging.getLogger(__name__)

Payload = dict[str, Any]


class Bus(Protocol):
    async def publish(self, topic: str, payload: Payload) -> None: ...

    def subscribe(self, *topics: str) -> contextlib.AbstractAsyncContextManager[AsyncIterator[Payload]]: ...

    async def close(self) -> None: ...


class LocalBus:
    def __init__(self, queue_size: int = 10_000) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[Payload]]] = defaultdict(set)
        self._queue_size = queue_size
        self._dropped = 0
        self._warned_at = 0.0

    async def publish(self, topic: str, payload: Payload) -> None:
        for queue in list(self._subscribers.get(topic, ())):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                self._dropped += 1
                now = time.monotonic()
                if now - self._warned_at > 10:  # one line per 10 s, not one per message
                    log.warning("a bus subscriber is slow: %d messages dropped so far", self._dropped)
                    self._warned_at = now
            queue.put_nowait({**payload, "topic": topic})

    @contextlib.asynccontextmanager
    async def subscribe(self, *topics: str) -> AsyncIterator[AsyncIterator[Payload]]:
        queue: asyncio.Queue[Payload] = asyncio.Queue(self._queue_size)
        for topic in topics:
            self._subscribers[topic].add(queue)

        async def messages() -> AsyncIterator[Payload]:
            while True:
                yield await queue.get()

        try:
            yield messages()
        finally:
            for topic in topics:
                self._subscribers[topic].discard(queue)
                if not self._subscribers[topic]:
                    del self._subscribers[topic]

    async def close(self) -> None:
        self._subscribers.clear()
