"""One tab's sender: pops go out at once, presence and live-call rows at most every STATE_INTERVAL."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, cast

from fastapi import WebSocket

from callbridge.domain.users import Role, User
from callbridge.web.live import STATE_INTERVAL, Connection, Sockets, _send


class FakeSocket:
    def __init__(self) -> None:
        self.frames: list[tuple[float, list[dict[str, Any]]]] = []

    async def send_text(self, text: str) -> None:
        data = json.loads(text)
        self.frames.append((time.monotonic(), data if isinstance(data, list) else [data]))


def presence(ext: str, state: str) -> dict[str, Any]:
    return {"topic": "presence", "type": "presence", "pbx": "office", "extension": ext, "presence": state}


def card(key: str) -> dict[str, Any]:
    return {"topic": "desk", "users": [7], "msg": {"type": "card", "card": {"key": key}}}


async def test_states_are_throttled_per_tab_and_pops_never_wait() -> None:
    ws = FakeSocket()
    conn = Connection(cast(WebSocket, ws), User(id=7, name="alice", role=Role.AGENT))
    sockets = Sockets()
    sockets.add(conn)
    sender = asyncio.create_task(_send(conn))
    try:
        start = time.monotonic()
        sockets.deliver(presence("1001", "ringing"))  # idle tab: goes out at once
        await asyncio.sleep(0.02)
        assert [m["presence"] for m in ws.frames[0][1]] == ["ringing"]
        assert ws.frames[0][0] - start < STATE_INTERVAL / 2
        # A burst of states inside the interval: only the newest per extension, in one frame.
        for state in ("on_call", "available", "ringing", "on_call"):
            for ext in ("1001", "1002"):
                sockets.deliver(presence(ext, state))
        sockets.deliver(card("office/1"))  # a pop in the middle of the burst is not held back
        await asyncio.sleep(0.02)
        assert len(ws.frames) == 2
        assert [m["type"] for m in ws.frames[1][1]] == ["card"]
        await asyncio.sleep(STATE_INTERVAL)
        assert len(ws.frames) == 3
        states = {m["extension"]: m["presence"] for m in ws.frames[2][1]}
        assert states == {"1001": "on_call", "1002": "on_call"}
        assert ws.frames[2][0] - ws.frames[0][0] >= STATE_INTERVAL * 0.9
        # Quiet again: the next state waits for nothing.
        await asyncio.sleep(STATE_INTERVAL)
        sockets.deliver(presence("1001", "available"))
        await asyncio.sleep(0.02)
        assert len(ws.frames) == 4 and ws.frames[3][1][0]["presence"] == "available"
    finally:
        conn.close()
        sender.cancel()
