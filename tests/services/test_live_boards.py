"""The board of open cards keeps each user's own card (their "Last calls" differ), in memory and
in Redis alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from tests.conftest import REDIS_URL

from callbridge.services.live import MemoryBoard, PresenceBoard


@pytest.fixture(params=["memory", "redis"])
async def board(request: pytest.FixtureRequest) -> AsyncIterator[PresenceBoard]:
    if request.param == "memory":
        yield MemoryBoard()
        return
    if not REDIS_URL:
        pytest.skip("needs the throwaway Redis that make test starts")
    from callbridge.live_redis import RedisBoard

    url = REDIS_URL.rsplit("/", 1)[0] + "/8"  # a database of its own: no other test's keys
    flusher = aioredis.from_url(url)
    await flusher.flushdb()
    await flusher.aclose()
    found = RedisBoard(url)
    yield found
    await found.close()


async def test_each_user_gets_their_own_card_until_the_call_ends(board: PresenceBoard) -> None:
    sent = datetime.now(UTC).isoformat()
    agent_card = {"key": "main/c1", "recent": [], "sent_at": sent}
    manager_card = {"key": "main/c1", "recent": [{"id": 7}], "sent_at": sent}
    await board.set_card("main/c1", [([1], agent_card), ([2, 3], manager_card)])
    assert await board.cards(1) == [agent_card]
    assert await board.cards(3) == [manager_card]
    assert await board.cards(4) == []
    await board.set_card("main/c1", [])
    assert await board.cards(1) == [] and await board.cards(3) == []
