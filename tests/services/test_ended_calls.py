"""An ended call stays ended: events of it stamped after its end (a replay, a PBX retry after a
crash, an agent resending after a reconnect, each stamped anew) change nothing, pop nothing, and
notify nobody. The hub is restarted between the call and the replay, so no memory helps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import FAST_HASHER, add_user

from callbridge.config import Settings
from callbridge.domain.events import CallEnded, CallRinging, CallStarted, Direction, Disposition, Event
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.live import DESK_TOPIC
from callbridge.store.calls import CallFilter
from callbridge.store.desk import SqlDesk

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def missed_call(at: datetime) -> list[Event]:
    return [
        CallStarted(
            pbx="office",
            call_id="c-1",
            at=at,
            direction=Direction.INBOUND,
            from_number="+14155550100",
            to_number="+14155559999",
        ),
        CallRinging(pbx="office", call_id="c-1", at=at + timedelta(seconds=1), extension="1001"),
        CallEnded(pbx="office", call_id="c-1", at=at + timedelta(seconds=20), disposition=Disposition.MISSED),
    ]


async def stored_call(hub: Hub) -> tuple[Any, int]:
    async with hub.db.unit() as repos:
        found, _ = await repos.calls.search(CallFilter(), limit=10)
        assert len(found) == 1
        return found[0], len(await repos.calls.events(found[0].id))


async def desk_messages(hub: Hub, events: list[Event]) -> list[Any]:
    """What the desk publishes while ``events`` go through preview and ingest, as a link sends them."""
    seen: list[Any] = []
    async with hub.bus.subscribe(DESK_TOPIC) as messages:

        async def collect() -> None:
            async for message in messages:
                seen.append(message)

        collector = asyncio.create_task(collect())
        hub.preview(events)
        await hub.handle_events(events)
        await asyncio.sleep(0.2)  # early pops run in tasks of their own
        collector.cancel()
    return seen


async def test_an_ended_call_is_not_reopened_by_its_events_replayed_after_a_restart(
    hub: Hub, settings: Settings
) -> None:
    user = await add_user(hub, "ann", Role.AGENT)
    async with hub.db.unit() as repos:
        await repos.extensions.map("office", "1001", user.id)
    first = await desk_messages(hub, missed_call(T0))
    assert any(m["msg"]["type"] == "notification" for m in first)  # the missed call, once
    call, events = await stored_call(hub)
    assert (call.disposition.value, call.ring_seconds, events) == ("missed", 20, 3)
    await hub.close()

    # A new process on the same database: the same call, stamped 30 minutes later.
    again = Hub.build(settings, hasher=FAST_HASHER)
    await again.prepare()
    try:
        replayed = await desk_messages(again, missed_call(T0 + timedelta(minutes=30)))
        assert replayed == []  # no ringing pop, no card, no notification
        after, events_after = await stored_call(again)
        assert (after.ended_at, after.ring_seconds, events_after) == (call.ended_at, 20, 3)
        async with again.db.unit() as repos:
            notes = await SqlDesk(repos.session).notifications(user.id)
        assert len(notes) == 1
        # A recording still comes after the end; an event stamped up to the end still counts.
        from callbridge.domain.events import RecordingAvailable

        late = [
            RecordingAvailable(pbx="office", call_id="c-1", at=T0 + timedelta(minutes=31), recording="r.wav"),
            CallRinging(pbx="office", call_id="c-1", at=T0 + timedelta(seconds=2), extension="1002"),
        ]
        await again.handle_events(late)
        final, count = await stored_call(again)
        assert count == 5 and final.recording == "r.wav" and final.ended_at == call.ended_at
    finally:
        await again.close()
