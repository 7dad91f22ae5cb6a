"""GET /api/v1/analytics/calls: the figures' definitions, time zones, who sees what, CSV and
XLSX, and the words a bad question gets."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook
from tests.conftest import add_user, sign_in

from callbridge.domain.directory import ContactKind, phone_from_input
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
from callbridge.services.directory import ContactInput

ADA = "+14155550100"
BEN = "+14155550111"
OFFICE = "+14155559999"
DAY1 = datetime(2026, 3, 1, tzinfo=UTC)


def at(hours: float) -> datetime:
    return DAY1 + timedelta(hours=hours)


def inbound(
    call_id: str, start: datetime, number: str, rung: str, outcome: Disposition, ring: int, talk: int = 0
) -> list[CallEvent]:
    events: list[CallEvent] = [
        CallStarted(
            pbx="main",
            call_id=call_id,
            at=start,
            direction=Direction.INBOUND,
            from_number=number,
            to_number=OFFICE,
        ),
        CallRinging(pbx="main", call_id=call_id, at=start + timedelta(seconds=1), extension=rung),
    ]
    end = start + timedelta(seconds=ring)
    if outcome is Disposition.ANSWERED:
        events.append(CallAnswered(pbx="main", call_id=call_id, at=end, extension=rung))
        end += timedelta(seconds=talk)
    events.append(CallEnded(pbx="main", call_id=call_id, at=end, disposition=outcome))
    return events


def outbound(call_id: str, start: datetime, ext: str, number: str) -> list[CallEvent]:
    return [
        CallStarted(
            pbx="main",
            call_id=call_id,
            at=start,
            direction=Direction.OUTBOUND,
            from_number=ext,
            to_number=number,
            placed_by=ext,
        ),
        CallAnswered(pbx="main", call_id=call_id, at=start + timedelta(seconds=8), extension=number),
        CallEnded(
            pbx="main", call_id=call_id, at=start + timedelta(seconds=98), disposition=Disposition.ANSWERED
        ),
    ]


async def world(hub: Hub) -> dict[str, int]:
    """Alice (1001) answers Ada at 09:00 UTC (5 s ring, 60 s talk) and misses Ben at 10:00;
    Bob (1002) calls Ben back at 10:30:20, and misses an abandoned call at 18:45 UTC (00:15 in
    India the next day); a 12 s answer by Alice at 18:15 UTC (23:45 in India). Dave owns nothing."""
    ids = {}
    for name, role in (
        ("alice", Role.AGENT),
        ("bob", Role.AGENT),
        ("carol", Role.MANAGER),
        ("dave", Role.AGENT),
    ):
        ids[name] = (await add_user(hub, name, role)).id
    async with hub.db.unit() as repos:
        await repos.extensions.map("main", "1001", ids["alice"])
        await repos.extensions.map("main", "1002", ids["bob"])
        await repos.directory.create(
            ContactInput(ContactKind.PERSON, "Ada", phones=(phone_from_input(ADA, "US"),), tags=("VIP",))
        )
    events = [
        *inbound("c1", at(9), ADA, "1001", Disposition.ANSWERED, ring=5, talk=60),
        *inbound("c2", at(10), BEN, "1001", Disposition.MISSED, ring=20),
        *outbound("c3", at(10.5) + timedelta(seconds=20), "1002", BEN),
        *inbound("c4", at(18.75), BEN, "1002", Disposition.ABANDONED, ring=9),
        *inbound("c5", at(18.25), ADA, "1001", Disposition.ANSWERED, ring=12, talk=30),
    ]
    await hub.ingest_batch(list(reversed(events)))
    return ids


async def figures(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    answer = await client.get("/api/v1/analytics/calls", params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def as_user(client: httpx.AsyncClient, name: str) -> httpx.AsyncClient:
    token = await sign_in(client, name, "user-password-1")
    client.headers["x-csrf-token"] = token
    return client


async def test_each_figure_as_defined(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    await world(hub)
    body = await figures(
        admin_client, **{"from": "2026-03-01", "to": "2026-03-02", "tz": "UTC", "group": "day"}
    )
    assert [g["key"] for g in body["groups"]] == ["2026-03-01"]
    totals = body["totals"]
    assert body["groups"][0] == {"key": "2026-03-01", **totals}
    assert (totals["offered"], totals["answered"], totals["missed"], totals["abandoned"]) == (4, 2, 1, 1)
    assert totals["answer_rate"] == 0.5
    assert totals["avg_ring_seconds"] == 8.5  # (5 + 12) / 2 answered calls
    assert totals["avg_talk_seconds"] == 45.0
    # Ring times 5 (bucket 3–6 s) and 12 (12–15 s): the 90th percentile is 1.8 calls in, 80 %
    # of the way through the 12–15 s bucket.
    assert totals["p90_ring_seconds"] == 14.4
    # Ben's missed call (ended 10:00:20) was called back at 10:30:20; his abandoned call at
    # 18:45 was not (no outbound call after it).
    assert totals["callbacks"] == 1 and totals["avg_callback_seconds"] == 1800.0
    # Outbound calls are counted apart (direction=outbound), with the same definitions.
    out = await figures(
        admin_client, **{"from": "2026-03-01", "to": "2026-03-02", "tz": "UTC", "direction": "outbound"}
    )
    assert (out["totals"]["offered"], out["totals"]["answered"], out["totals"]["callbacks"]) == (1, 1, 0)
    by_direction = await figures(
        admin_client, **{"from": "2026-03-01", "to": "2026-03-02", "group": "direction"}
    )
    assert {g["key"]: g["offered"] for g in by_direction["groups"]} == {
        "inbound": 4,
        "outbound": 1,
        "internal": 0,
    }
    assert by_direction["totals"]["offered"] == 5


async def test_days_in_a_half_hour_zone(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    """India is UTC+5:30: 18:15 UTC is 23:45 on the 1st, 18:45 UTC is 00:15 on the 2nd."""
    await world(hub)
    body = await figures(
        admin_client, **{"from": "2026-03-01", "to": "2026-03-03", "tz": "Asia/Kolkata", "group": "day"}
    )
    assert body["from"] == "2026-02-28T18:30:00+00:00"
    by_day = {g["key"]: (g["offered"], g["answered"], g["abandoned"]) for g in body["groups"]}
    assert by_day == {"2026-03-01": (3, 2, 0), "2026-03-02": (1, 0, 1)}
    hours = await figures(
        admin_client,
        **{"from": "2026-03-01T23:00", "to": "2026-03-02T01:00", "tz": "Asia/Kolkata", "group": "hour"},
    )
    assert {g["key"]: g["offered"] for g in hours["groups"]} == {"2026-03-01T23:00": 1, "2026-03-02T00:00": 1}
    heat = await figures(
        admin_client,
        **{"from": "2026-03-01", "to": "2026-03-03", "tz": "Asia/Kolkata", "group": "weekday_hour"},
    )
    assert len(heat["groups"]) == 168
    # 2026-03-01 is a Sunday; 2026-03-02 a Monday.
    busy = {g["key"]: g["offered"] for g in heat["groups"] if g["offered"]}
    assert busy == {"Sun 14:00": 1, "Sun 15:00": 1, "Sun 23:00": 1, "Mon 00:00": 1}
    week = await figures(
        admin_client, **{"from": "2026-02-23", "to": "2026-03-09", "tz": "Asia/Kolkata", "group": "week"}
    )
    assert {g["key"]: g["offered"] for g in week["groups"]} == {"2026-02-23": 3, "2026-03-02": 1}


async def test_users_queue_and_tags(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    ids = await world(hub)
    period = {"from": "2026-03-01", "to": "2026-03-02", "tz": "UTC"}
    users = await figures(admin_client, **period, group="user")
    assert [(g["key"], g["user_id"], g["offered"], g["answered"]) for g in users["groups"]] == [
        ("alice", ids["alice"], 3, 2),
        ("bob", ids["bob"], 1, 0),
    ]
    queue = await figures(admin_client, **period, group="queue")
    assert queue["groups"] == [{"key": None, **queue["totals"]}]  # no queue calls yet
    # Two inbound calls went through the queue "sales"; one got the call type "Support".
    from sqlalchemy import select, update

    from callbridge.store.calls import calls

    async with hub.db.session() as s:
        inbound = (
            (
                await s.execute(
                    select(calls.c.id)
                    .where(
                        calls.c.direction == "inbound", calls.c.started_at < datetime(2026, 3, 2, tzinfo=UTC)
                    )
                    .order_by(calls.c.id)
                )
            )
            .scalars()
            .all()
        )
        await s.execute(update(calls).where(calls.c.id.in_(inbound[:2])).values(queue="sales"))
        await s.execute(update(calls).where(calls.c.id == inbound[0]).values(call_type="Support"))
    queue = await figures(admin_client, **period, group="queue")
    assert [g["key"] for g in queue["groups"]] == ["sales", None]
    assert queue["groups"][0]["offered"] == 2
    assert sum(g["offered"] for g in queue["groups"]) == queue["totals"]["offered"] == len(inbound)
    types = await figures(admin_client, **period, group="call_type")
    assert [(g["key"], g["offered"]) for g in types["groups"]] == [("Support", 1), (None, len(inbound) - 1)]
    tags = await figures(admin_client, **period, group="tag")
    assert [(g["key"], g["offered"], g["answered"]) for g in tags["groups"]] == [("vip", 2, 2)]


async def test_an_agent_sees_only_their_own_figures(hub: Hub, client: httpx.AsyncClient) -> None:
    await world(hub)
    period = {"from": "2026-03-01", "to": "2026-03-02", "tz": "UTC"}
    await as_user(client, "alice")
    mine = await figures(client, **period, group="user")
    assert [(g["key"], g["offered"], g["answered"], g["missed"]) for g in mine["groups"]] == [
        ("alice", 3, 2, 1)
    ]
    assert mine["totals"]["offered"] == 3
    by_day = await figures(client, **period, group="day")
    assert by_day["totals"]["offered"] == 3 and by_day["groups"][0]["offered"] == 3


async def test_an_agent_who_owns_nothing_sees_zeros(hub: Hub, client: httpx.AsyncClient) -> None:
    ids = await world(hub)
    await as_user(client, "dave")
    period = {"from": "2026-03-01", "to": "2026-03-03", "tz": "UTC"}
    for group in ("day", "hour", "weekday_hour", "direction", "pbx", "queue", "tag", "user", "call_type"):
        body = await figures(client, **period, group=group, direction="all")
        assert body["totals"]["offered"] == 0, group
        assert all(g["offered"] == 0 for g in body["groups"]), group
        assert body["totals"]["answer_rate"] is None
    users = await figures(client, **period, group="user")
    assert [(g["key"], g["user_id"]) for g in users["groups"]] == [("dave", ids["dave"])]
    page = await client.get("/analytics", params=period, headers={"accept": "text/html"})
    assert page.status_code == 200
    assert 'data-figure="offered">0<' in page.text


async def test_csv_and_xlsx_have_the_json_numbers(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    await world(hub)
    period = {"from": "2026-03-01", "to": "2026-03-03", "tz": "Asia/Kolkata", "group": "day"}
    body = await figures(admin_client, **period)
    fields = [
        "offered", "answered", "missed", "abandoned", "answer_rate", "avg_ring_seconds",
        "p90_ring_seconds", "avg_talk_seconds", "callbacks", "avg_callback_seconds",
    ]  # fmt: skip
    expected = [[g["key"], *(g[f] for f in fields)] for g in body["groups"]]
    expected.append(["total", *(body["totals"][f] for f in fields)])

    answer = await admin_client.get("/api/v1/analytics/calls", params={**period, "format": "xlsx"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/vnd.openxmlformats")
    sheet = load_workbook(io.BytesIO(answer.content)).active
    assert sheet is not None
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert rows[0] == ["key", *fields]
    assert rows[1:] == expected

    answer = await admin_client.get("/api/v1/analytics/calls", params={**period, "format": "csv"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(answer.text)))
    assert table[0] == ["key", *fields]
    assert table[1:] == [["" if v is None else str(v) for v in row] for row in expected]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"from": "2026-03-02", "to": "2026-03-01"}, "to must be after from"),
        ({"from": "2026-01-01", "to": "2026-03-01", "group": "hour"}, "group=hour covers at most 31 days"),
        ({"from": "2025-01-01", "to": "2026-01-01", "group": "hour"}, "use group=day"),
        ({"tz": "Mars/Olympus"}, "unknown time zone"),
        ({"group": "planet"}, "unknown group"),
        ({"format": "pdf"}, "unknown format"),
        ({"direction": "sideways"}, "unknown direction"),
        ({"from": "2026-03-01T10:07", "to": "2026-03-02"}, "quarter hour"),
        ({"from": "yesterday", "to": "2026-03-02"}, "is not a date"),
        ({"from": "0001-01-01T00:00", "to": "2026-03-02", "tz": "Asia/Tokyo"}, "between 1970 and 2999"),
        ({"from": "2020-01-01", "to": "2026-03-02"}, "at most three years"),
    ],
)
async def test_bad_questions_get_400_with_words(
    admin_client: httpx.AsyncClient, params: dict[str, str], words: str
) -> None:
    answer = await admin_client.get("/api/v1/analytics/calls", params=params)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] and words in error["message"]


async def test_signed_out_gets_401(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/v1/analytics/calls")
    assert answer.status_code == 401
