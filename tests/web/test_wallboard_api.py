"""The wallboard's data and links: the board follows stored queue events (a resend counts
once), links are made and revoked by managers only, a revoked link opens nothing and its
open screens are told at once."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
from fastapi import WebSocket
from tests.conftest import add_user, api_token

from callbridge.domain.events import (
    CallEnded,
    CallStarted,
    Direction,
    Disposition,
    MemberState,
    QueueJoined,
    QueueLeft,
    QueueMemberChanged,
    QueueOutcome,
)
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.queues import WALLBOARD_TOPIC
from callbridge.web.live import Connection, Sockets, _send


class FakeSocket:
    def __init__(self) -> None:
        self.frames: list[list[dict[str, Any]]] = []
        self.closed: int | None = None

    async def send_text(self, text: str) -> None:
        data = json.loads(text)
        self.frames.append(data if isinstance(data, list) else [data])

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = code


async def test_the_board_follows_stored_queue_events_and_counts_a_resend_once(hub: Hub) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    at = now - timedelta(seconds=30)
    started = CallStarted(
        pbx="office",
        at=at,
        call_id="q1",
        direction=Direction.INBOUND,
        from_number="+14155550100",
        to_number="",
    )
    joined = QueueJoined(pbx="office", at=at, call_id="q1", queue="sales", position=1)
    member = QueueMemberChanged(
        pbx="office",
        at=at,
        queue="sales",
        extension="1001",
        change="paused",
        state=MemberState.AVAILABLE,
        paused=True,
        reason="lunch",
    )
    await hub.handle_events([started, joined, member])
    snap = await hub.wallboard_snapshot()
    assert snap["waiting"] == 1 and snap["longest_since"] == at.isoformat()
    assert snap["agents"]["paused"] == 1
    assert snap["agent_list"][0]["reason"] == "lunch"
    left = QueueLeft(
        pbx="office", at=now, call_id="q1", queue="sales", outcome=QueueOutcome.ABANDONED, wait_seconds=30
    )
    ended = CallEnded(pbx="office", at=now, call_id="q1", disposition=Disposition.ABANDONED)
    messages = await hub.ingest_batch([left, ended])
    assert [t for t, _ in messages].count(WALLBOARD_TOPIC) == 1
    again = await hub.ingest_batch([left, ended])  # a resend: stored already, nothing changes
    assert WALLBOARD_TOPIC not in [t for t, _ in again]
    snap = await hub.wallboard_snapshot()
    (sales,) = snap["queues"]
    assert (snap["waiting"], sales["offered"], sales["abandoned"], snap["abandon_rate"]) == (0, 1, 1, 1.0)
    # A fresh board (a restart) seeds today's figures from the call log: the same numbers.
    hub.queue_board.day = ""
    hub.queue_board._calls.clear()
    reseeded = await hub.wallboard_snapshot()
    assert reseeded["queues"][0]["abandoned"] == 1 and reseeded["waiting"] == 0


async def test_wallboard_links_are_for_managers_and_revoking_one_closes_its_screens(
    hub: Hub, client: httpx.AsyncClient
) -> None:
    admin = {"authorization": f"Bearer {await api_token(hub, 'admin')}"}
    await add_user(hub, "agent", Role.AGENT)
    agent = {"authorization": f"Bearer {await api_token(hub, 'agent')}"}
    assert (await client.post("/api/v1/wallboard/links", json={}, headers=agent)).status_code == 403
    assert (await client.get("/api/v1/wallboard", headers=agent)).status_code == 403
    made = await client.post("/api/v1/wallboard/links", json={"name": "Hall"}, headers=admin)
    assert made.status_code == 201, made.text
    url = made.json()["url"]
    path = url[url.index("/wallboard/tv/") :]
    opened = await client.get(path)  # no credentials at all
    assert opened.status_code == 200 and "wallboard.js" in opened.text
    assert (await client.get("/wallboard/tv/not-a-token")).status_code == 404
    assert (await client.get("/wallboard", follow_redirects=False)).status_code in (303, 401)
    listed = (await client.get("/api/v1/wallboard/links", headers=admin)).json()
    assert [(x["name"], x["revoked_at"]) for x in listed] == [("Hall", None)]
    link_id = made.json()["id"]
    assert (await client.delete(f"/api/v1/wallboard/links/{link_id}", headers=agent)).status_code == 403
    assert (await client.delete(f"/api/v1/wallboard/links/{link_id}", headers=admin)).status_code == 204
    assert (await client.get(path)).status_code == 404
    gone = await client.delete(f"/api/v1/wallboard/links/{link_id}", headers=admin)
    assert gone.status_code == 404 and "revoked already" in gone.json()["error"]["message"]
    bad = await client.post("/api/v1/wallboard/links", json={"name": "x" * 101}, headers=admin)
    assert bad.status_code == 422


async def test_wallboard_sockets_get_every_change_at_once_and_revoked_ones_are_closed() -> None:
    sockets = Sockets()
    mine, other = FakeSocket(), FakeSocket()
    tv = Connection(cast(WebSocket, mine), None, link_id=5)
    tv2 = Connection(cast(WebSocket, other), None, link_id=6)
    sockets.wallboards |= {tv, tv2}
    senders = [asyncio.create_task(_send(c)) for c in (tv, tv2)]
    try:
        start = time.monotonic()
        for n in range(3):
            sockets.deliver({"topic": WALLBOARD_TOPIC, "type": "wallboard", "version": n})
        await asyncio.sleep(0.02)
        assert [m["version"] for f in mine.frames for m in f] == [0, 1, 2]  # none held back
        assert time.monotonic() - start < 0.1
        sockets.deliver({"topic": WALLBOARD_TOPIC, "type": "revoked", "link": 5})
        await asyncio.sleep(0.3)
        assert mine.frames[-1] == [{"type": "revoked"}]
        assert mine.closed == 4410 and other.closed is None
        assert sockets.wallboards == {tv2}
    finally:
        for task in senders:
            task.cancel()


async def test_a_caller_shows_on_the_board_before_the_call_log_stores_it_and_counts_once(hub: Hub) -> None:
    await hub.wallboard_snapshot()  # a wallboard is open: the board is seeded
    now = datetime.now(UTC).replace(microsecond=0)
    joined = QueueJoined(pbx="office", at=now - timedelta(seconds=5), call_id="p1", queue="sales")
    hub.preview([joined])
    assert hub.queue_board.snapshot(now)["waiting"] == 1  # not stored yet
    await hub.handle_events([joined])
    assert hub.queue_board.snapshot(now)["waiting"] == 1  # stored: still one caller, not two
    left = QueueLeft(
        pbx="office", at=now, call_id="p1", queue="sales", outcome=QueueOutcome.TIMEOUT, wait_seconds=5
    )
    hub.preview([left])
    snap = hub.queue_board.snapshot(now)
    assert snap["waiting"] == 0 and snap["queues"][0]["timed_out"] == 0  # counts wait for the store
    await hub.handle_events([left])
    snap = hub.queue_board.snapshot(now)
    assert (snap["waiting"], snap["queues"][0]["timed_out"], snap["queues"][0]["offered"]) == (0, 1, 1)
    assert hub.queue_board._early == {}
