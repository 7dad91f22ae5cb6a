"""The desk's early pop, on its own: who gets it, and what it reads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from callbridge.domain.directory import Contact, ContactKind
from callbridge.domain.events import CallRinging, CallStarted, Direction
from callbridge.services.live import Desk, MemoryBoard, RecentCall

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
ADA = Contact(id=7, kind=ContactKind.PERSON, name="Ada Lovelace", owner_id=3, tags=("VIP",))


class Reads:
    """A DeskStore and ContactFinder that count what they are asked."""

    def __init__(self) -> None:
        self.opened = 0
        self.maps = 0
        self.numbers: list[str] = []
        self.extensions = {("office", "1001"): 3}

    async def extension_map(self) -> Mapping[tuple[str, str], int]:
        self.maps += 1
        return dict(self.extensions)

    @contextlib.asynccontextmanager
    async def lookups(self) -> AsyncIterator[tuple[Any, Any]]:
        self.opened += 1
        yield self, self

    async def users_for(self, pbx: str, extensions: Sequence[str]) -> Mapping[str, int]:
        raise AssertionError("the early pop reads the extension map, not one query per ring")

    async def by_number_key(self, key: str) -> list[Contact]:
        self.numbers.append(key)
        return [ADA] if key == "+14155550100" else []

    async def contact(self, contact_id: int) -> Contact | None:
        return ADA if contact_id == ADA.id else None

    async def user_label(self, user_id: int) -> str:
        return "alice"

    async def colleague(self, pbx: str, extension: str) -> str:
        return {"1002": "Bob"}.get(extension, "")

    async def recent_calls(
        self, contact_id: int, limit: int, viewers: Sequence[int]
    ) -> Mapping[int, list[RecentCall]]:
        return {user_id: [] for user_id in viewers}

    async def call_ended(self, pbx: str, call_id: str) -> bool:
        return False

    async def owed(self, number: str) -> Sequence[tuple[int | None, datetime]]:
        # Alice (3) owes Ada a call: the early pop says so.
        return [(3, T0 - timedelta(hours=1))] if number == "+14155550100" else []


def ring(call_id: str, extension: str, caller: str = "+14155550100") -> list[Any]:
    return [
        CallStarted(
            pbx="office",
            call_id=call_id,
            at=T0,
            direction=Direction.INBOUND,
            from_number=caller,
            to_number="+14155559999",
        ),
        CallRinging(pbx="office", call_id=call_id, at=T0, extension=extension),
    ]


async def test_a_mapped_phone_pops_at_once_and_an_unmapped_one_costs_no_lookup() -> None:
    reads = Reads()
    published: list[tuple[str, Any]] = []

    async def publish(messages: Sequence[tuple[str, Any]]) -> None:
        published.extend(messages)

    desk = Desk(MemoryBoard(), lookups=reads.lookups, publish=publish, extension_map=reads.extension_map)
    desk.preview(ring("c1", "1001"))
    await asyncio.sleep(0.01)
    assert len(published) == 1
    topic, payload = published[0]
    card = payload["msg"]["card"]
    assert topic == "desk" and payload["users"] == [3]
    assert card["id"] is None and card["state"] == "ringing" and card["caller"] == "Ada Lovelace"
    assert card["tags"] == ["VIP"] and card["owner"] == "alice" and card["extension"] == "1001"
    assert card["owed_since"] == (T0 - timedelta(hours=1)).isoformat()  # alice owes Ada a call
    assert reads.maps == 1 and reads.numbers == ["+14155550100"]
    # Rings at phones nobody has: with a fresh map, not even a task.
    for n in range(50):
        desk.preview(ring(f"q{n}", "2999"))
    assert not desk._early_tasks
    await asyncio.sleep(0.01)
    assert len(published) == 1 and reads.opened == 1 and reads.maps == 1
    await desk.close()
