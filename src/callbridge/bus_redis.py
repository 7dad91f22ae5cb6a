"""Redis pub/sub implementation of :class:`callbridge.bus.Bus`, for several hub workers."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from callbridge.bus import Payload

log = logging.getLogger(__name__)

_PREFIX = "callbridge:"


class RedisBus:
    def __init__(self, url: str) -> None:
        self._redis = aioredis.from_url(url, socket_connect_timeout=5)

    async def publish(self, topic: str, payload: Payload) -> None:
        await self._redis.publish(_PREFIX + topic, json.dumps(payload, default=str))

    @contextlib.asynccontextmanager
    async def subscribe(self, *topics: str) -> AsyncIterator[AsyncIterator[Payload]]:
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(*(_PREFIX + t for t in topics))

        async def messages() -> AsyncIterator[Payload]:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                channel = message["channel"].decode()
                try:
                    payload = json.loads(message["data"])
                except ValueError:
                    log.warning("ignored a malformed bus message on %s", channel)
                    continue
                payload["topic"] = channel.removeprefix(_PREFIX)
                yield payload

        try:
            yield messages()
        finally:
            await pubsub.aclose()

    async def close(self) -> None:
        await self._redis.aclose()
