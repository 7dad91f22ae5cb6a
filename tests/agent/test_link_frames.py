"""What the hub does with frames an agent should never send: binary, oversized, not JSON, bad
sequence numbers, events and raw events with oversized fields. A real WebSocket client against
the hub served by uvicorn; the agent runner end to end for a poisoned outbox."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from tests.agent.conftest import Served, add_agent_pbx, serve
from tests.agent.test_agent_link import SECRET, _config, _run, _stop, eventually
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from callbridge.agent.runner import Agent
from callbridge.pbx.asterisk.simulator import AmiSimulator
from callbridge.services.agents import (
    AGENT_FRAME_BYTES,
    MAX_FRAME_BYTES,
    RAW_MAX_BYTES,
    RAW_MAX_VALUE,
)
from callbridge.web.server import uvicorn_options

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC).isoformat()


@pytest.fixture
async def sim() -> AsyncIterator[AmiSimulator]:
    async with AmiSimulator(secret=SECRET, auth_failure_delay=0.05) as s:
        yield s


async def _open(served: Served, token: str, epoch: str = "e1") -> ClientConnection:
    url = served.url.replace("http://", "ws://") + "/agent/v1/link"
    ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None)
    await ws.send(json.dumps({"type": "hello", "version": "test", "epoch": epoch}))
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome"
    return ws


async def _closed(ws: ClientConnection) -> tuple[int, str]:
    """Read until the hub closes; its close code and reason."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None, "the hub dropped the connection without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def _answers(ws: ClientConnection, until_ack: int) -> list[dict[str, Any]]:
    """Hub frames up to the ack of ``until_ack`` (status-free: the test sends none)."""
    out: list[dict[str, Any]] = []
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        out.append(msg)
        if msg.get("type") == "ack" and msg.get("seq") >= until_ack:
            return out


def _event(call_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "kind": "call_started",
        "at": NOW,
        "call_id": call_id,
        "direction": "inbound",
        "from_number": "+14155550100",
        "to_number": "1001",
        **fields,
    }


async def _high_water(served: Served) -> int:
    async with served.hub.db.unit() as repos:
        record = await repos.agents.find("office")
    assert record is not None
    return record.high_water


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and "callbridge" in r.name]


async def test_binary_frame_is_closed_1003_without_a_traceback(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    token = await add_agent_pbx(served.hub)
    ws = await _open(served, token)
    await ws.send(b"\x00\x01binary")
    code, reason = await _closed(ws)
    assert code == 1003 and "binary" in reason
    _no_traceback(caplog)
    assert any("office" in r.getMessage() and "binary" in r.getMessage() for r in caplog.records)


async def test_binary_hello_is_closed_1003(served: Served) -> None:
    token = await add_agent_pbx(served.hub)
    url = served.url.replace("http://", "ws://") + "/agent/v1/link"
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.send(b"hello")
        code, _ = await _closed(ws)
    assert code == 1003


async def test_frame_over_the_cap_is_closed_1009(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    token = await add_agent_pbx(served.hub)
    ws = await _open(served, token)
    # Under uvicorn's own limit of the test server (16 MiB): the hub's check is what closes it.
    filler = "x" * (MAX_FRAME_BYTES + 10)
    await ws.send(json.dumps({"type": "batch", "items": [{"seq": 1, "t": "raw", "body": {"x": filler}}]}))
    code, reason = await _closed(ws)
    assert code == 1009 and str(MAX_FRAME_BYTES) in reason
    assert await _high_water(served) == 0
    _no_traceback(caplog)


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "batch", "items": [',  # cut short
        '{"type": "batch", "items": [{"seq": ' + "9" * 5000 + "}]}",  # past Python's digit limit
        "[" * 100_000 + "]" * 100_000,  # nested past the recursion limit
    ],
    ids=["truncated", "5000-digit-number", "deeply-nested"],
)
async def test_malformed_json_is_closed_1007(
    served: Served, caplog: pytest.LogCaptureFixture, frame: str
) -> None:
    token = await add_agent_pbx(served.hub)
    ws = await _open(served, token)
    await ws.send(frame)
    code, _ = await _closed(ws)
    assert code == 1007
    _no_traceback(caplog)


@pytest.mark.parametrize(
    "seq",
    ["1e400", str(2**70), str(2**63), "-1", "0", "true", "1.5", '"7"', "null", "NaN", "Infinity"],
)
async def test_out_of_range_seq_is_refused_1008_and_moves_nothing(
    served: Served, caplog: pytest.LogCaptureFixture, seq: str
) -> None:
    token = await add_agent_pbx(served.hub)
    ws = await _open(served, token)
    body = json.dumps(_event("c-1"))
    await ws.send(f'{{"type":"batch","items":[{{"seq":{seq},"t":"event","body":{body}}}]}}')
    code, reason = await _closed(ws)
    assert code == 1008 and "seq" in reason
    assert await _high_water(served) == 0
    _no_traceback(caplog)
    # The link works again at once, and the largest legal number is taken.
    ws = await _open(served, token)
    await ws.send(
        json.dumps({"type": "batch", "items": [{"seq": 2**63 - 1, "t": "event", "body": _event("c-2")}]})
    )
    answers = await _answers(ws, 2**63 - 1)
    assert answers[-1] == {"type": "ack", "seq": 2**63 - 1}
    await ws.close()
    assert await _high_water(served) == 2**63 - 1


async def _stored_events(served: Served) -> list[dict[str, Any]]:
    engine = create_async_engine(served.hub.settings.effective_database_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT c.pbx_call_id, c.from_number, c.from_name, e.payload FROM calls c "
                        "JOIN call_events e ON e.call_id = c.id ORDER BY c.id"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    out = []
    for call_id, number, name, payload in rows:
        data = json.loads(payload) if isinstance(payload, str) else payload
        out.append({"call_id": call_id, "from_number": number, "from_name": name, "payload": data})
    return out


async def test_bad_items_are_rejected_one_by_one_and_big_fields_are_capped(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    token = await add_agent_pbx(served.hub)
    ws = await _open(served, token)
    huge_headers = {f"H{i}": "v" * 5000 for i in range(400)}
    huge_headers["Repeated"] = ["r" * 10] * 1000
    items = [
        {"seq": 1, "t": "event", "body": _event("c" * 129)},  # a call id longer than the store keeps
        {"seq": 2, "t": "event", "body": _event("ok-1", from_number="5" * 200_000, from_name="N" * 10_000)},
        {"seq": 3, "t": "nonsense", "body": {}},
        {"seq": 4, "t": "event", "body": "not an object"},
        {"seq": 5, "t": "event", "body": {"kind": "call_exploded"}},
        {"seq": 6, "t": "raw", "body": {"name": "VarSet", "headers": huge_headers, "at": NOW}},
        {"seq": 7, "t": "raw", "body": {"name": "VarSet", "headers": {}, "at": "yesterday"}},
        {"seq": 8, "t": "event", "body": _event("ok-2", extension="1" * 40, kind="call_ringing")},
        ["not", "an", "object"],
    ]
    await ws.send(json.dumps({"type": "batch", "items": items[:-1]}))
    answers = await _answers(ws, 8)
    await ws.close()
    rejects = [r for msg in answers if msg["type"] == "reject" for r in msg["items"]]
    assert sorted(r["seq"] for r in rejects) == [1, 3, 4, 5, 7, 8]
    assert all(isinstance(r["reason"], str) and r["reason"] for r in rejects)
    assert answers[-1] == {"type": "ack", "seq": 8}
    assert await _high_water(served) == 8

    stored = await _stored_events(served)
    assert [s["call_id"] for s in stored] == ["ok-1"]
    ok = stored[0]
    assert ok["from_number"] == "5" * 64 and ok["payload"]["from_number"] == "5" * 64
    assert ok["from_name"] == "N" * 200 and ok["payload"]["from_name"] == "N" * 200

    raw = (await served.api.get("/api/v1/agent-events")).json()["items"]
    assert len(raw) == 1
    headers = raw[0]["headers"]
    assert len(json.dumps(headers)) <= RAW_MAX_BYTES
    assert all(len(v) <= RAW_MAX_VALUE for v in headers.values() if isinstance(v, str))
    assert headers["H0"] == "v" * RAW_MAX_VALUE
    _no_traceback(caplog)
    assert any("seq 1" in r.getMessage() and "office" in r.getMessage() for r in caplog.records)

    # An item that is not an object cannot be named: the frame is refused as a whole.
    ws = await _open(served, token)
    await ws.send(json.dumps({"type": "batch", "items": [items[-1]]}))
    code, _ = await _closed(ws)
    assert code == 1008


async def test_status_and_bans_with_absurd_numbers_keep_the_link(served: Served) -> None:
    token = await add_agent_pbx(served.hub)
    ws = await _open(served, token)
    await ws.send(
        '{"type":"status","ami_up":true,"outbox_depth":1e400,"outbox_age_seconds":1e400,'
        f'"outbox_dropped":{2**70},"live_calls":-5}}'
    )
    await ws.send(
        '{"type":"bans","items":[{"address":"192.0.2.9","failures":1e400,"reason":"' + "r" * 5000 + '"}]}'
    )
    await ws.send(json.dumps({"type": "batch", "items": [{"seq": 1, "t": "event", "body": _event("c-1")}]}))
    assert (await _answers(ws, 1))[-1] == {"type": "ack", "seq": 1}
    await ws.close()

    async def stored() -> bool:
        async with served.hub.db.unit() as repos:
            record = await repos.agents.find("office")
            bans = await repos.agents.bans("office")
        return record is not None and record.outbox_dropped > 0 and len(bans) == 1

    await eventually(stored, what="status and bans stored")
    async with served.hub.db.unit() as repos:
        record = await repos.agents.find("office")
        bans = await repos.agents.bans("office")
    assert record is not None
    assert record.outbox_depth == 2**31 - 1 and record.outbox_dropped == 2**31 - 1
    assert record.outbox_age_seconds < float("inf")
    assert bans[0].failures == 2**31 - 1 and len(bans[0].reason) == 200


async def test_agent_drops_a_poisoned_outbox_row_and_goes_on(
    served: Served, sim: AmiSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows the hub can never take (written by a buggy or older agent) leave the outbox with a
    log line; the rows behind them are delivered."""
    hub = served.hub
    token = await add_agent_pbx(hub)
    agent = Agent(_config(served.url, token, sim, tmp_path))
    agent.outbox.append("event", _event("x" * 300))  # a call id no store column holds
    agent.outbox.append("raw", {"name": "VarSet", "headers": {"Value": "v" * (6 * 2**20)}, "at": NOW})
    agent.outbox.append("event", _event("good-1"))
    assert agent.outbox.depth == 3
    caplog.set_level(logging.INFO)
    task = await _run(agent)
    try:
        await eventually(lambda: agent.outbox.depth == 0 and agent.outbox.acked >= 3, what="outbox drained")
        await sim.place_call("inbound_answered", caller="+14155550123")

        async def logged() -> bool:
            return any(
                s["from_number"] == "+14155550123" and s["payload"]["kind"] == "call_ended"
                for s in await _stored_events(served)
            )

        await eventually(logged, what="the next call in the log")
        await eventually(lambda: agent.outbox.depth == 0, what="outbox drained again")
    finally:
        await _stop(task)
    ids = {s["call_id"] for s in await _stored_events(served)}
    assert "good-1" in ids and "x" * 300 not in ids
    raw = (await served.api.get("/api/v1/agent-events")).json()["items"]
    assert len(raw) == 1 and len(raw[0]["headers"]["Value"]) == RAW_MAX_VALUE
    assert any(
        r.name.startswith("callbridge.agent") and "rejected" in r.getMessage() and "seq 1" in r.getMessage()
        for r in caplog.records
    )


async def test_served_hub_refuses_an_oversized_frame_before_reading_it(hub: Any) -> None:
    """``callbridge serve`` gives uvicorn the same cap: the frame is refused while it arrives."""
    options = uvicorn_options(hub.settings)
    assert options["ws_max_size"] == MAX_FRAME_BYTES
    async with serve(hub, **options) as served:
        token = await add_agent_pbx(hub)
        ws = await _open(served, token)
        await ws.send("x" * (MAX_FRAME_BYTES + 1))
        code, reason = await _closed(ws)
    assert code == 1009 and "exceeds" in reason


async def test_agent_frames_stay_under_its_byte_budget(tmp_path: Path, sim: AmiSimulator) -> None:
    agent = Agent(_config("http://127.0.0.1:9", "cbagent_x", sim, tmp_path))
    for i in range(12):  # 12 rows of ~200 KB: 2.4 MB in all, each under MAX_ITEM_BYTES
        agent.outbox.append(
            "raw", {"name": "VarSet", "headers": {"V": "x" * 200_000, "N": str(i)}, "at": NOW}
        )
    sent: list[str] = []

    class Socket:
        async def send(self, frame: str) -> None:
            sent.append(frame)

    task = asyncio.create_task(agent._send_loop(Socket()))  # type: ignore[arg-type]
    try:
        await eventually(lambda: agent._sent == 12, what="every row sent")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(sent) >= 3
    assert all(len(frame) <= AGENT_FRAME_BYTES + 100 for frame in sent)
    seqs = [item["seq"] for frame in sent for item in json.loads(frame)["items"]]
    assert seqs == list(range(1, 13))
