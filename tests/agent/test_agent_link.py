"""The agent and the hub over a real WebSocket: tokens, actions, settings push, events map, bans,
health. The hub is served by uvicorn in this loop; the agent runs in-process against the AMI
simulator."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.agent.conftest import Served, add_agent_pbx
from tests.agent.procs import call_counts
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from callbridge.agent.config import AgentConfig
from callbridge.agent.firewall import DryRunBackend, GuardService
from callbridge.agent.runner import Agent, TokenRefused
from callbridge.domain.errors import PbxRejected, PbxUnavailable
from callbridge.pbx.asterisk.simulator import AmiSimulator
from callbridge.services.agents import CLOSE_TOKEN_REFUSED, AgentLink
from callbridge.services.ports import Originate

SECRET = "agent-ami-secret"


async def eventually(check: Callable[[], object], limit: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or check}")


def emit_failed_login(sim: AmiSimulator, address: str) -> None:
    """A SIP registration with a wrong password from ``address``, as Asterisk reports it."""
    sim.emit(
        "InvalidPassword",
        [
            ("Severity", "Error"),
            ("Service", "PJSIP"),
            ("EventVersion", "1"),
            ("AccountID", "1001"),
            ("SessionID", "x"),
            ("LocalAddress", "IPV4/UDP/192.0.2.1/5060"),
            ("RemoteAddress", f"IPV4/UDP/{address}/5060"),
            ("EventTV", datetime.now(UTC).isoformat()),
        ],
        privilege="security",
    )


async def _drained(report: object) -> bool:
    found = await report  # type: ignore[misc]
    return bool(found["outbox_depth"] == 0)


def _config(url: str, token: str, sim: AmiSimulator, tmp_path: Path) -> AgentConfig:
    return AgentConfig(
        hub=url,
        token=token,
        ami_port=sim.port,
        ami_username="hub",
        ami_secret=SECRET,
        outbox=tmp_path / "outbox.sqlite3",
        status_interval=0.1,
        backoff_initial=0.05,
        backoff_max=0.2,
        refused_backoff=0.3,
        guard_backend="off",
    )


@pytest.fixture
async def sim() -> AsyncIterator[AmiSimulator]:
    async with AmiSimulator(secret=SECRET, auth_failure_delay=0.05) as s:
        yield s


async def _run(agent: Agent) -> asyncio.Task[None]:
    return asyncio.create_task(agent.run())


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_forged_and_revoked_tokens_are_refused_with_a_reason(served: Served) -> None:
    token = await add_agent_pbx(served.hub)
    ws_url = served.url.replace("http://", "ws://") + "/agent/v1/link"
    for forged in ("cbagent_" + "x" * 43, "not-even-an-agent-token", token[:-2] + "zz"):
        async with connect(ws_url, additional_headers={"Authorization": f"Bearer {forged}"}) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CLOSE_TOKEN_REFUSED
        assert "agent token refused" in closed.value.rcvd.reason

    revoked = await served.api.delete("/api/v1/pbxes/office/agent-token")
    assert revoked.status_code == 204
    async with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_TOKEN_REFUSED
    assert "revoked" in closed.value.rcvd.reason

    # A rotated token works; the agent's session is refused with the old one (TokenRefused).
    rotated = await served.api.post("/api/v1/pbxes/office/agent-token")
    assert rotated.status_code == 201 and rotated.json()["token"].startswith("cbagent_")
    assert rotated.json()["token"] != token


async def test_refused_agent_backs_off_instead_of_storming(
    served: Served, sim: AmiSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await add_agent_pbx(served.hub)
    agent = Agent(_config(served.url, "cbagent_forged-token-value", sim, tmp_path))
    with pytest.raises(TokenRefused):
        await agent._session()
    task = await _run(agent)
    await asyncio.sleep(1.0)
    await _stop(task)
    refusals = [r for r in caplog.records if "the hub refused this agent" in r.getMessage()]
    # refused_backoff 0.3 s doubling: 0 s, 0.3, 0.9 → at most 3 tries in a second (not hundreds).
    assert 1 <= len(refusals) <= 3
    assert "next try in" in refusals[0].getMessage()


async def test_agent_serves_calls_actions_settings_events_and_bans(
    served: Served, sim: AmiSimulator, tmp_path: Path
) -> None:
    hub = served.hub
    token = await add_agent_pbx(hub)
    guard = GuardService(DryRunBackend(), tick_interval=0.05)
    agent = Agent(_config(served.url, token, sim, tmp_path), guard=guard)
    task = await _run(agent)
    try:
        await eventually(lambda: agent.hub_connected and agent.ami.client.connected, what="agent up")
        link = hub.supervisor().links["office"]
        assert isinstance(link, AgentLink)
        await eventually(lambda: link.health.ami_up, what="AMI up reported")

        # A call flows into the log.
        await sim.place_call("inbound_answered", caller="+14155550123")

        async def logged() -> bool:
            return await call_counts(hub.settings.effective_database_url) == (1, 1, 0, 1)

        await eventually(logged, what="call in the log")

        # Health, from the API: the outbox drains to empty once the hub has acknowledged.
        async def health() -> dict[str, object]:
            found: dict[str, object] = (await served.api.get("/api/v1/agents")).json()["items"][0]
            return found

        await eventually(lambda: agent.outbox.depth == 0, what="outbox drained")
        await eventually(lambda: _drained(health()), what="outbox depth reported")
        reported = await health()
        assert reported["pbx"] == "office" and reported["connected"] and reported["ami_up"]
        assert reported["version"] and reported["last_event_at"]

        # Actions over the link: originate reaches Asterisk, a bad hangup comes back as PbxRejected.
        placed = await link.originate(Originate(extension="1001", number="+14155550100"))
        assert placed.startswith("cb-")
        assert any(a.get("Action") == "Originate" and a.get("ChannelId") == placed for a in sim.actions)
        with pytest.raises(PbxRejected):
            await link.hangup("no-such-call")

        # Settings pushed: an events map rule; the agent applies it without a restart.
        rule = {
            "event": "Hangup",
            "conditions": [{"header": "Channel", "op": "starts_with", "value": "PJSIP/trunk"}],
        }
        # ContactStatus is no event the tracker reads: Asterisk's filter is widened for it.
        assert agent.ami.client.server_filtered
        contact_rule = {"event": "ContactStatus", "conditions": []}
        put = await served.api.put(
            "/api/v1/pbxes/office/agent-settings",
            json={"events_map": [rule, contact_rule], "guard": {"enabled": True, "max_failures": 3}},
        )
        assert put.status_code == 200, put.text
        await eventually(lambda: bool(agent.events_map) and agent.guard_enabled, what="settings applied")
        await sim.place_call("inbound_missed", caller="+14155550199")
        await asyncio.sleep(0.2)  # the filter is widened right after the settings are applied
        sim.emit("ContactStatus", [("URI", "sip:1001@192.0.2.7"), ("ContactStatus", "Reachable")], "system")

        async def forwarded() -> list[dict[str, object]]:
            items: list[dict[str, object]] = (await served.api.get("/api/v1/agent-events")).json()["items"]
            return items

        async def both_forwarded() -> bool:
            return {e["name"] for e in await forwarded()} == {"Hangup", "ContactStatus"}

        await eventually(both_forwarded, what="raw events forwarded")
        hangups = [e for e in await forwarded() if e["name"] == "Hangup"]
        assert hangups and all(str(e["headers"]["Channel"]).startswith("PJSIP/trunk") for e in hangups)  # type: ignore[index]

        # The guard bans after 3 failures; the hub lists the ban and lifts it.
        for _ in range(3):
            emit_failed_login(sim, "203.0.113.9")

        async def banned() -> list[dict[str, object]]:
            items: list[dict[str, object]] = (await served.api.get("/api/v1/bans")).json()["items"]
            return items

        await eventually(banned, what="ban reported")
        assert [b["address"] for b in await banned()] == ["203.0.113.9"]
        lifted = await served.api.delete("/api/v1/bans/office/203.0.113.9")
        assert lifted.status_code == 204, lifted.text
        assert guard.bans_for_hub() == []
        assert await banned() == []
    finally:
        await _stop(task)

    # Agent gone: an action fails fast, with a message a user understands.
    await eventually(lambda: not link.connected, what="agent disconnected")
    started = time.monotonic()
    with pytest.raises(PbxUnavailable, match="agent of PBX office is not connected"):
        await link.originate(Originate(extension="1001", number="+14155550100"))
    assert time.monotonic() - started < 0.5
