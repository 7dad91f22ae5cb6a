"""An agent-served PBX behind a hub of two workers sharing PostgreSQL and Redis.

The agent's WebSocket reaches one worker; people reach either. Whatever is asked on the other
worker (settings, lifting a ban, click-to-call, hang up, revoking the token) travels over the bus
to the worker the agent is connected to; with no agent anywhere, it fails within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from tests.agent.conftest import add_agent_pbx, serve
from tests.agent.test_agent_link import SECRET, _config, emit_failed_login, eventually
from tests.conftest import FAST_HASHER, REDIS_URL

from callbridge.agent.firewall import DryRunBackend, GuardService
from callbridge.agent.runner import Agent
from callbridge.config import Settings
from callbridge.hub import Hub
from callbridge.pbx.asterisk.simulator import AmiSimulator
from callbridge.services.agents import AgentLink
from callbridge.services.dialing import TAKEN_SECONDS
from callbridge.store.directory import SqlExtensions

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not REDIS_URL, reason="needs the throwaway Redis that make test starts"),
]

BANNED = "203.0.113.9"


async def test_two_workers_carry_every_agent_action_to_the_worker_it_is_connected_to(
    backend: str, settings: Settings, tmp_path: Path
) -> None:
    if backend != "postgres":
        pytest.skip("two worker processes share PostgreSQL in production")
    redis_url = REDIS_URL.rsplit("/", 1)[0] + "/7"  # a database of its own: no other test's keys
    flusher = aioredis.from_url(redis_url)
    await flusher.flushdb()
    await flusher.aclose()
    shared = settings.model_copy(update={"redis_url": redis_url})
    first, second = Hub.build(shared, hasher=FAST_HASHER), Hub.build(shared, hasher=FAST_HASHER)
    await first.prepare()
    token = await add_agent_pbx(first)
    async with first.db.unit() as repos:
        admin = await repos.users.get_by_name("admin")
        assert admin is not None
        await SqlExtensions(repos.session).map("office", "1001", admin.user.id)
    sim = AmiSimulator(secret=SECRET, auth_failure_delay=0.05)
    await sim.start()
    guard = GuardService(DryRunBackend(), tick_interval=0.05)
    try:
        async with serve(first) as a, serve(second) as b:
            agent = Agent(_config(a.url, token, sim, tmp_path), guard=guard)
            task = asyncio.create_task(agent.run())
            try:
                await eventually(lambda: agent.hub_connected and agent.ami.client.connected, what="agent up")
                link = first.supervisor().links["office"]
                assert isinstance(link, AgentLink) and link.connected
                assert "office" not in second.supervisor().links

                # Settings saved on the other worker reach the agent.
                put = await b.api.put(
                    "/api/v1/pbxes/office/agent-settings",
                    json={"guard": {"enabled": True, "max_failures": 3}},
                )
                assert put.status_code == 200, put.text
                await eventually(lambda: agent.guard_enabled, what="settings pushed via the bus")

                # A ban reported through the first worker is lifted from the second.
                for _ in range(3):
                    emit_failed_login(sim, BANNED)

                async def listed() -> list[str]:
                    items = (await b.api.get("/api/v1/bans")).json()["items"]
                    return [str(i["address"]) for i in items]

                await eventually(lambda: _equals(listed(), [BANNED]), what="ban listed")
                lifted = await b.api.delete(f"/api/v1/bans/office/{BANNED}")
                assert lifted.status_code == 204, lifted.text
                assert guard.bans_for_hub() == []

                # Click-to-call on the second worker rings through the agent.
                placed = await b.api.post("/api/v1/calls/originate", json={"number": "+14155550100"})
                assert placed.status_code == 200, placed.text
                call_id = placed.json()["call_id"]
                assert any(
                    x.get("Action") == "Originate" and x.get("ChannelId") == call_id for x in sim.actions
                )

                # Hang up a live call from the second worker.
                live = await sim.start_call("inbound", caller="+14155550123")

                async def live_row() -> int:
                    items = (await b.api.get("/api/v1/calls")).json()["items"]
                    found = [c["id"] for c in items if c["pbx_call_id"] == live.linkedid]
                    return int(found[0]) if found else 0

                await eventually(live_row, what="live call logged")
                hung = await b.api.post(f"/api/v1/calls/{await live_row()}/hangup")
                assert hung.status_code == 204, hung.text
                assert any(x.get("Action") == "Hangup" for x in sim.actions)

                # Revoking the token on the second worker cuts the agent's link on the first.
                revoked = await b.api.delete("/api/v1/pbxes/office/agent-token")
                assert revoked.status_code == 204
                await eventually(lambda: not link.connected, what="agent disconnected by the revocation")
                await asyncio.sleep(0.5)
                assert not link.connected  # its retries are refused
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

            # No agent anywhere: click-to-call on the second worker fails fast, clearly.
            started = time.monotonic()
            refused = await b.api.post("/api/v1/calls/originate", json={"number": "+14155550100"})
            assert refused.status_code == 503
            assert "office" in refused.json()["error"]["message"]
            assert time.monotonic() - started < TAKEN_SECONDS + 2
    finally:
        await sim.stop()
        await first.close()
        await second.close()


async def _equals(found: object, expected: list[str]) -> bool:
    return await found == expected  # type: ignore[misc]
