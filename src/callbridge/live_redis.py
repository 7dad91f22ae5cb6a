"""Redis implementations of the live desk's shared state: the link lease lock and the board
of presence and open cards that every hub worker reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from callbridge.domain.events import Presence

_PREFIX = "callbridge:"
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
# A card whose call never ended (its worker died) disappears after this long.
CARD_TTL_SECONDS = 4 * 3600


class RedisLock:
    """``services.lease.Lock``: a key with a TTL, renewed only by its owner."""

    def __init__(self, url: str) -> None:
        self._redis = aioredis.from_url(url, socket_connect_timeout=5, socket_timeout=5)

    async def acquire(self, key: str, owner: str, ttl: float) -> bool:
        return bool(await self._redis.set(_PREFIX + key, owner, nx=True, px=int(ttl * 1000)))

    async def renew(self, key: str, owner: str, ttl: float) -> bool:
        done = await self._redis.eval(_RENEW, 1, _PREFIX + key, owner, str(int(ttl * 1000)))
        return bool(done)

    async def release(self, key: str, owner: str) -> None:
        await self._redis.eval(_RELEASE, 1, _PREFIX + key, owner)

    async def close(self) -> None:
        await self._redis.aclose()


class RedisBoard:
    """``services.live.PresenceBoard`` in two Redis hashes."""

    def __init__(self, url: str) -> None:
        self._redis = aioredis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        self._presence = _PREFIX + "presence"
        self._cards = _PREFIX + "cards"

    async def set(self, pbx: str, extension: str, presence: Presence, at: datetime) -> None:
        field = json.dumps([pbx, extension])
        await self._redis.hset(self._presence, field, json.dumps([presence.value, at.isoformat()]))

    async def all(self) -> dict[tuple[str, str], tuple[Presence, datetime]]:
        raw = await self._redis.hgetall(self._presence)
        out: dict[tuple[str, str], tuple[Presence, datetime]] = {}
        for field, value in raw.items():
            try:
                pbx, extension = json.loads(field)
                presence, at = json.loads(value)
                out[(str(pbx), str(extension))] = (Presence(presence), datetime.fromisoformat(at))
            except (ValueError, TypeError):
                continue
        return out

    async def set_card(self, key: str, cards: Sequence[tuple[Sequence[int], dict[str, Any]]]) -> None:
        if not cards:
            await self._redis.hdel(self._cards, key)
            return
        groups = [{"users": list(users), "body": body} for users, body in cards]
        value = json.dumps({"groups": groups, "at": cards[0][1].get("sent_at")})
        await self._redis.hset(self._cards, key, value)

    async def cards(self, user_id: int) -> list[dict[str, Any]]:
        raw = await self._redis.hgetall(self._cards)
        out = []
        now = datetime.now().astimezone()
        for value in raw.values():
            try:
                item = json.loads(value)
                at = datetime.fromisoformat(item["at"])
            except (ValueError, TypeError, KeyError):
                continue
            if (now - at).total_seconds() > CARD_TTL_SECONDS:
                continue
            # Each user's own card (their "Last calls" differ); a card written before these
            # groups had one body for every user and no such list: not shown again.
            for group in item.get("groups", ()):
                if isinstance(group, dict) and user_id in group.get("users", ()):
                    out.append(group["body"])
        return out

    async def close(self) -> None:
        await self._redis.aclose()
