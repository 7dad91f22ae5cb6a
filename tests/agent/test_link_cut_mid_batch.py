"""A link cut while the hub stores a batch: the batch still ends (stored whole, or not at all),
the database is not left locked, and the agent's next connection starts after it.

A write cancelled midway could leave SQLite's write lock held by a pooled connection; every
later write then waited for the lock and failed, and the agent could never reconnect."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.agent.conftest import Served, add_agent_pbx
from tests.agent.procs import call_counts
from websockets.asyncio.client import ClientConnection, connect

START = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _call_items(first_seq: int, calls: int, prefix: str) -> list[dict[str, object]]:
    """``calls`` whole inbound calls (start, answer, end), numbered from ``first_seq``."""
    items: list[dict[str, object]] = []
    seq = first_seq
    for i in range(calls):
        at = START + timedelta(seconds=i)
        common = {"call_id": f"{prefix}-{i}", "at": at.isoformat()}
        bodies = [
            {
                "kind": "call_started",
                "direction": "inbound",
                "from_number": f"+1415555{i:04d}",
                "to_number": "1001",
                **common,
            },
            {"kind": "call_answered", "extension": "1001", **common},
            {
                "kind": "call_ended",
                "disposition": "answered",
                "answered_by": "1001",
                **common,
                "at": (at + timedelta(seconds=30)).isoformat(),
            },
        ]
        for body in bodies:
            items.append({"seq": seq, "t": "event", "body": body})
            seq += 1
    return items


async def test_a_cut_mid_batch_lets_the_batch_end_and_the_next_connection_start_after_it(
    served: Served, database_url: str
) -> None:
    token = await add_agent_pbx(served.hub)
    rounds = 2
    for round_ in range(rounds):
        items = _call_items(1 + round_ * 3000, 1000, f"cut{round_}")
        top = int(items[-1]["seq"])  # type: ignore[call-overload]
        ws, _ = await _hello(served, token)
        await ws.send(json.dumps({"type": "batch", "items": items}))
        await asyncio.sleep(0.05 + 0.1 * round_)  # the hub is storing it now
        ws.transport.abort()  # cut: no close frame, like a dead network
        started = time.monotonic()
        again, welcome = await _hello(served, token)
        # The new connection started once the batch had ended: it starts after the batch's last
        # row (stored whole), or from where it was before (rolled back whole; then resent).
        assert welcome["high_water"] in (top, top - 3000), (round_, welcome)
        if welcome["high_water"] != top:
            await again.send(json.dumps({"type": "batch", "items": items}))
            while (msg := json.loads(await asyncio.wait_for(again.recv(), 30)))["type"] != "ack":
                pass
            assert msg["seq"] == top
        # And the database takes writes at once: nothing holds its write lock.
        probe = time.monotonic()
        assert await served.hub.db.can_write()
        assert time.monotonic() - probe < 1.0
        assert time.monotonic() - started < 30
        await again.close()
    calls, distinct, still_open, ended = await call_counts(database_url)
    assert (calls, distinct, still_open, ended) == (1000 * rounds,) * 2 + (0, 1000 * rounds)


async def _hello(served: Served, token: str) -> tuple[ClientConnection, dict[str, Any]]:
    url = served.url.replace("http://", "ws://") + "/agent/v1/link"
    ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None)
    await ws.send(json.dumps({"type": "hello", "version": "test", "epoch": "e1"}))
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert welcome["type"] == "welcome"
    return ws, welcome
