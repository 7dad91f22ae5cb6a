"""Analytics rollups kept on ingest equal a recount from the call log, whatever the order the
events came in, however often they came, and however the calls were folded again on the way."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from tests.conftest import add_user

from callbridge.domain.analytics import Counters, LoggedCall, RollupKey, recount
from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallRinging,
    CallStarted,
    Direction,
    Disposition,
)
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.store.analytics import SqlRollups, call_callbacks, call_rollups, counters_from
from callbridge.store.calls import calls

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
NUMBERS = ["+14155550100", "+14155550101", "+14155550102", "+14155550103"]
EXTENSIONS = ["1001", "1002", "1003", "1004", "1009"]  # 1009 belongs to nobody


def random_call(rng: random.Random, call_id: str) -> list[CallEvent]:
    """One call's events: inbound, outbound or internal; answered, missed, abandoned, busy or
    still ringing; sometimes with the PBX's own measured start (a CDR) that moves the start."""
    at = T0 + timedelta(minutes=rng.randrange(0, 60 * 24 * 4), seconds=rng.randrange(60))
    direction = rng.choice([Direction.INBOUND] * 3 + [Direction.OUTBOUND, Direction.INTERNAL])
    number = rng.choice(NUMBERS)
    ext = rng.choice(EXTENSIONS)
    other = rng.choice([e for e in EXTENSIONS if e != ext])
    if direction is Direction.INBOUND:
        start = CallStarted(
            pbx="main",
            call_id=call_id,
            at=at,
            direction=direction,
            from_number=number,
            to_number="+14155559999",
        )
        rung = [ext, other] if rng.random() < 0.3 else [ext]
    elif direction is Direction.OUTBOUND:
        start = CallStarted(
            pbx="main",
            call_id=call_id,
            at=at,
            direction=direction,
            from_number=ext,
            to_number=number,
            placed_by=ext,
        )
        rung = []
    else:
        start = CallStarted(
            pbx="main",
            call_id=call_id,
            at=at,
            direction=direction,
            from_number=ext,
            to_number=other,
            placed_by=ext,
        )
        rung = [other]
    events: list[CallEvent] = [start]
    events += [
        CallRinging(pbx="main", call_id=call_id, at=at + timedelta(seconds=1), extension=e) for e in rung
    ]
    ring = rng.choice([2, 4, 7, 11, 14, 19, 23, 28, 35, 48, 55, 80, 100, 150, 250, 400])
    outcome = rng.choice(["answered", "answered", "missed", "abandoned", "busy", "voicemail", "open"])
    measured = at - timedelta(seconds=rng.choice([0, 0, 40, 1000])) if rng.random() < 0.3 else None
    if outcome == "answered":
        taker = rung[0] if rung else ""
        answer_at = at + timedelta(seconds=ring)
        events.append(CallAnswered(pbx="main", call_id=call_id, at=answer_at, extension=taker or "+1"))
        end_at = answer_at + timedelta(seconds=rng.randrange(5, 600))
        events.append(
            CallEnded(
                pbx="main", call_id=call_id, at=end_at, disposition=Disposition.ANSWERED, started_at=measured
            )
        )
    elif outcome != "open":
        events.append(
            CallEnded(
                pbx="main",
                call_id=call_id,
                at=at + timedelta(seconds=ring),
                disposition=Disposition(outcome),
                started_at=measured,
            )
        )
    return events


MONTH = timedelta(days=30)
MONTH_SECONDS = 30 * 86400


def shifted(event: CallEvent, pbx: str, by: timedelta) -> CallEvent:
    changes: dict[str, Any] = {"pbx": pbx}
    for name in ("at", "started_at", "answered_at"):
        value = getattr(event, name, None)
        if isinstance(value, datetime):
            changes[name] = value + by
    return dataclasses.replace(event, **changes)


async def stored_rollups(hub: Hub) -> dict[RollupKey, Counters]:
    async with hub.db.unit() as repos:
        rows = (await repos.session.execute(select(call_rollups))).all()
    out = {}
    for row in rows:
        counters = counters_from(row)
        if not counters.is_zero:
            out[RollupKey(row.user_id, row.grain, row.bucket, row.direction, row.pbx)] = counters
    return out


async def recount_from_log(hub: Hub) -> tuple[dict[int, int], dict[RollupKey, Counters]]:
    async with hub.db.unit() as repos:
        ids = list((await repos.session.execute(select(calls.c.id))).scalars())
        stored = await SqlRollups(repos.session).read(ids)
    return recount(LoggedCall(i, s.facts, s.number, s.ended_at) for i, s in stored.items())


async def stored_callbacks(hub: Hub) -> dict[int, int]:
    async with hub.db.unit() as repos:
        rows = (await repos.session.execute(select(call_callbacks))).all()
    return {int(r.call_id): int(r.seconds) for r in rows}


async def people(hub: Hub) -> None:
    for n, ext in enumerate(EXTENSIONS[:4]):
        user = await add_user(hub, f"agent{n}", Role.AGENT)
        async with hub.db.unit() as repos:
            await repos.extensions.map("main", ext, user.id)


async def feed(hub: Hub, events: list[Any], rng: random.Random) -> None:
    at = 0
    while at < len(events):
        size = rng.choice([1, 3, 17, 60])
        await hub.ingest_batch(events[at : at + size])
        at += size


async def test_rollups_equal_a_recount_after_shuffled_and_repeated_events(hub: Hub) -> None:
    await people(hub)
    rng = random.Random(1515)
    all_events: list[CallEvent] = []
    for i in range(300):
        all_events += random_call(rng, f"c{i}")
    # Every event once, shuffled; then a third of them again, shuffled again.
    first = list(all_events)
    rng.shuffle(first)
    again = rng.sample(all_events, len(all_events) // 3)
    await feed(hub, first + again, rng)

    rows = await stored_rollups(hub)
    delays, expected = await recount_from_log(hub)
    assert rows == expected
    assert await stored_callbacks(hub) == delays
    # The random calls did reach every kind of figure (the check above is not vacuous).
    total = sum((c for k, c in rows.items() if k.user_id == 0 and k.grain == 86400), Counters())
    assert total.answered > 30 and total.missed > 30 and total.abandoned > 10
    assert total.callbacks > 5
    assert any(k.user_id > 0 for k in rows)
    assert sum(total.ring_histogram) == total.answered


async def test_the_same_events_in_another_order_give_the_same_rollups(hub: Hub) -> None:
    """Two orders, fed one after the other into fresh calls (other call ids): the rollups of
    the second half equal those of the first, bucket for bucket."""
    await people(hub)
    rng = random.Random(77)
    calls_events = [random_call(rng, f"a{i}") for i in range(120)]
    first = [e for events in calls_events for e in events]
    rng.shuffle(first)
    await feed(hub, first, rng)
    after_first = await stored_rollups(hub)
    # Every call a second time under another PBX name, 30 days later (beyond the callback
    # window: the copies do not call back the first ones), events reversed and doubled.
    second = [shifted(e, "other", MONTH) for events in calls_events for e in events]
    second = list(reversed(second)) + second[::2]
    await feed(hub, second, rng)
    both = await stored_rollups(hub)
    firsts = {k: v for k, v in both.items() if k.pbx == "main"}
    seconds = {
        RollupKey(k.user_id, k.grain, k.bucket - MONTH_SECONDS, k.direction, "main"): v
        for k, v in both.items()
        if k.pbx == "other"
    }
    assert firsts == after_first
    # Users come from extensions mapped on "main" only: compare the whole-centre rows.
    assert {k: v for k, v in seconds.items() if k.user_id == 0} == {
        k: v for k, v in firsts.items() if k.user_id == 0
    }
    _, expected = await recount_from_log(hub)
    assert both == expected


async def test_rebuild_gives_back_the_rollups_ingest_kept(hub: Hub) -> None:
    await people(hub)
    rng = random.Random(5)
    events = [e for i in range(80) for e in random_call(rng, f"r{i}")]
    rng.shuffle(events)
    await feed(hub, events, rng)
    kept = await stored_rollups(hub)
    callbacks = await stored_callbacks(hub)
    async with hub.db.unit() as repos:
        assert await SqlRollups(repos.session).rebuild() == 80
        await repos.commit()
    assert await stored_rollups(hub) == kept
    assert await stored_callbacks(hub) == callbacks


async def test_rollups_stay_exact_when_lanes_ingest_side_by_side(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    """A big batch is spread over transactions running side by side on PostgreSQL: missed calls
    and the outbound calls that call them back land in different ones, at the same time, and
    neither waits for the other in a circle (a deadlock would fail the batch: it would then be
    stored event by event, correct but slow)."""
    await people(hub)
    rng = random.Random(99)
    events = [e for i in range(700) for e in random_call(rng, f"l{i}")]
    rng.shuffle(events)
    half = len(events) // 2
    await hub.ingest_batch(events[:half])
    await hub.ingest_batch(events[half:] + events[: half // 2])
    delays, expected = await recount_from_log(hub)
    assert await stored_rollups(hub) == expected
    assert await stored_callbacks(hub) == delays
    assert len(delays) > 20
    assert "failed; storing them one by one" not in caplog.text


async def test_a_caller_cancelled_mid_batch_neither_stops_the_batch_nor_leaves_the_database_locked(
    hub: Hub,
) -> None:
    """An agent's link that goes away cancels whoever waits for its batch. The batch ends anyway
    (stored whole) and the next write goes through at once: a write cancelled midway could
    leave SQLite's write lock held by a pooled connection, and later writes failed."""
    await people(hub)
    rng = random.Random(5)
    slow = []
    for k in range(12):
        events = [e for i in range(200) for e in random_call(rng, f"x{k}-{i}")]
        task = asyncio.create_task(hub.ingest_batch(events))
        await asyncio.sleep(rng.uniform(0.01, 0.4))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        started = time.monotonic()
        if not await hub.db.can_write() or time.monotonic() - started > 3.0:
            slow.append(k)
        assert await _calls_stored(hub, (k + 1) * 200) == (k + 1) * 200
    assert slow == []
    _delays, expected = await recount_from_log(hub)
    assert await stored_rollups(hub) == expected


async def _calls_stored(hub: Hub, expected: int, limit: float = 30) -> int:
    """The number of calls stored, once it reaches ``expected`` (or ``limit`` seconds passed)."""
    deadline, stored = time.monotonic() + limit, 0
    while time.monotonic() < deadline:
        async with hub.db.unit() as repos:
            stored = (await repos.session.execute(select(func.count()).select_from(calls))).scalar_one()
        if stored >= expected:
            break
        await asyncio.sleep(0.05)
    return int(stored)


async def test_batches_stored_side_by_side_keep_every_call(hub: Hub) -> None:
    """Several batches at once (several PBXs), their callers' numbers shared: on PostgreSQL their
    follow-up work can deadlock. The loser's follow-up runs in a savepoint and a lost race is
    tried again, so no call is dropped and the rollups stay exact."""
    await people(hub)
    rng = random.Random(11)
    batches = [[e for i in range(100) for e in random_call(rng, f"s{b}-{i}")] for b in range(10)]
    await asyncio.gather(*(hub.ingest_batch(batch) for batch in batches))
    assert await _calls_stored(hub, 1000, limit=5) == 1000
    _delays, expected = await recount_from_log(hub)
    assert await stored_rollups(hub) == expected
