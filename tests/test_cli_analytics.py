"""``callbridge analytics rebuild``: run for real in a subprocess against the database a hub
ingested calls into, after the rollups were damaged; they come back equal to a recount from the
call log (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select, update
from tests.store.test_analytics_rollups import (
    feed,
    people,
    random_call,
    recount_from_log,
    stored_callbacks,
    stored_rollups,
)

from callbridge.hub import Hub
from callbridge.store.analytics import call_callbacks, call_rollups
from callbridge.store.calls import calls

DAY = 86400
# random_call spreads its calls over 2026-03-01 .. 2026-03-05 (UTC).
MARCH_3 = int(datetime(2026, 3, 3, tzinfo=UTC).timestamp())
LONG_AGO = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp())


async def cli(hub: Hub, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CALLBRIDGE_DATA_DIR": str(hub.settings.data_dir),
        "CALLBRIDGE_DATABASE_URL": hub.settings.effective_database_url,
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    command = [sys.executable, "-m", "callbridge", *args]
    result = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert result.returncode == code, result.stdout + result.stderr
    return result


async def ingested(hub: Hub) -> None:
    await people(hub)
    rng = random.Random(15)
    events = [e for i in range(150) for e in random_call(rng, f"cli{i}")]
    rng.shuffle(events)
    await feed(hub, events, rng)


async def damage(hub: Hub, *, day_from: int, day_to: int) -> None:
    """Rows of the UTC days [day_from, day_to) deleted or wrong; a made-up row there; callbacks
    lost and made up for calls started then."""
    async with hub.db.unit() as repos:
        s = repos.session
        in_days = (call_rollups.c.bucket >= day_from, call_rollups.c.bucket < day_to)
        await s.execute(delete(call_rollups).where(*in_days, call_rollups.c.grain == 900))
        await s.execute(
            update(call_rollups)
            .where(*in_days, call_rollups.c.grain == 3600)
            .values(offered=call_rollups.c.offered + 3, answered=0)
        )
        await s.execute(
            insert(call_rollups).values(
                user_id=0, grain=86400, bucket=day_to - DAY, direction="inbound", pbx="ghost", offered=9
            )
        )
        started = select(calls.c.id).where(
            calls.c.started_at >= datetime.fromtimestamp(day_from, UTC),
            calls.c.started_at < datetime.fromtimestamp(day_to, UTC),
        )
        await s.execute(delete(call_callbacks).where(call_callbacks.c.call_id.in_(started)))
        answered = (await s.execute(started.where(calls.c.disposition == "answered").limit(1))).scalar_one()
        await s.execute(insert(call_callbacks).values(call_id=answered, seconds=5))
        await repos.commit()


async def test_rebuild_gives_back_a_recount_of_the_call_log(hub: Hub) -> None:
    await ingested(hub)
    delays, expected = await recount_from_log(hub)
    assert await stored_rollups(hub) == expected and len(delays) > 3
    await damage(hub, day_from=MARCH_3 - 2 * DAY, day_to=MARCH_3 + 3 * DAY)
    async with hub.db.unit() as repos:  # rows far from any call, and a callback of no call
        await repos.session.execute(
            insert(call_rollups).values(
                user_id=0, grain=900, bucket=LONG_AGO, direction="inbound", pbx="main", offered=1
            )
        )
        await repos.session.execute(insert(call_callbacks).values(call_id=999999, seconds=1))
        await repos.commit()
    assert await stored_rollups(hub) != expected
    assert await stored_callbacks(hub) != delays

    out = (await cli(hub, "analytics", "rebuild")).stdout
    assert "150 call(s) counted" in out and "stray callback(s) dropped" in out, out
    assert "from 2025-06-01 to 2026-03-0" in out

    assert await stored_rollups(hub) == expected
    assert await stored_callbacks(hub) == delays
    # Once rebuilt, a second run changes nothing.
    await cli(hub, "analytics", "rebuild")
    assert await stored_rollups(hub) == expected
    assert await stored_callbacks(hub) == delays


async def test_rebuild_since_a_date_rebuilds_those_days_only(hub: Hub) -> None:
    await ingested(hub)
    delays, expected = await recount_from_log(hub)
    await damage(hub, day_from=MARCH_3 - 2 * DAY, day_to=MARCH_3)  # before --since: left alone
    before = {k: v for k, v in (await stored_rollups(hub)).items() if k.bucket < MARCH_3}
    await damage(hub, day_from=MARCH_3, day_to=MARCH_3 + 3 * DAY)

    out = (await cli(hub, "analytics", "rebuild", "--since", "2026-03-03")).stdout
    assert "from 2026-03-03" in out and "day(s)" in out, out

    now = await stored_rollups(hub)
    assert {k: v for k, v in now.items() if k.bucket >= MARCH_3} == {
        k: v for k, v in expected.items() if k.bucket >= MARCH_3
    }
    assert (
        {k: v for k, v in now.items() if k.bucket < MARCH_3}
        == before
        != {k: v for k, v in expected.items() if k.bucket < MARCH_3}
    )
    # Callbacks of the calls started from March 3 on are recounted (the others stay damaged).
    async with hub.db.unit() as repos:
        later = set(
            (
                await repos.session.execute(
                    select(calls.c.id).where(calls.c.started_at >= datetime.fromtimestamp(MARCH_3, UTC))
                )
            ).scalars()
        )
    kept = await stored_callbacks(hub)
    assert {i: s for i, s in kept.items() if i in later} == {i: s for i, s in delays.items() if i in later}


async def test_rebuild_of_an_empty_log_says_so(hub: Hub) -> None:
    out = (await cli(hub, "analytics", "rebuild")).stdout
    assert "Nothing to rebuild" in out


async def test_rebuild_refuses_a_date_it_cannot_read_and_changes_nothing(hub: Hub) -> None:
    await ingested(hub)
    before = await stored_rollups(hub)
    refused = await cli(hub, "analytics", "rebuild", "--since", "03/03/2026", code=2)
    assert "Invalid value for '--since'" in refused.stdout + refused.stderr
    assert "%Y-%m-%d" in refused.stdout + refused.stderr
    assert await stored_rollups(hub) == before
