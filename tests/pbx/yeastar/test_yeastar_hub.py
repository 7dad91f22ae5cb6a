"""Yeastar end to end: the hub served by uvicorn on 127.0.0.1, a PBX added through the API, the
simulator pushing signed webhooks (with retries and duplicates) over real HTTP — or, in
WebSocket mode, the hub's link subscribed to the simulator — and every call checked through
``GET /api/v1/calls``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from tests.conftest import api_token

from callbridge.config import Settings
from callbridge.hub import Hub
from callbridge.pbx.yeastar.link import YeastarLink
from callbridge.pbx.yeastar.simulator import SimulatorConfig, YeastarSimulator
from callbridge.pbx.yeastar.webhooks import sign
from callbridge.services.ports import Originate

CALLER = "+14155550100"
CUSTOMER = "+14155550199"


def _tcp_socket() -> socket.socket:
    # IPPROTO_TCP so asyncio turns on TCP_NODELAY for accepted connections (no 40 ms stalls).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def hub_socket() -> AsyncIterator[socket.socket] | Any:
    sock = _tcp_socket()
    yield sock
    sock.close()


@pytest.fixture
def settings(settings: Settings, hub_socket: socket.socket) -> Settings:
    """The shared settings, plus links started by the hub and a public URL on the real port."""
    port = hub_socket.getsockname()[1]
    return settings.model_copy(update={"start_pbx_links": True, "public_url": f"http://127.0.0.1:{port}"})


@pytest.fixture
async def hub_url(app: FastAPI, hub_socket: socket.socket) -> AsyncIterator[str]:
    """The app (lifespan already entered by the ``app`` fixture) served over real HTTP."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[hub_socket]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{hub_socket.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


@dataclass
class Setup:
    hub: Hub
    sim: YeastarSimulator
    api: httpx.AsyncClient
    pbx: dict[str, Any]

    @property
    def link(self) -> YeastarLink:
        link = self.hub.supervisor().get("cloud")
        assert isinstance(link, YeastarLink)
        return link

    async def call(self, pbx_call_id: str, within: float = 10.0) -> dict[str, Any]:
        """The call's record from the API once it is complete (the PBX's CDR was ingested)."""
        async with asyncio.timeout(within):
            while True:  # the API is the thing under test: poll it, briefly
                answer = await self.api.get("/api/v1/calls", params={"limit": 500})
                assert answer.status_code == 200, answer.text
                for item in answer.json()["items"]:
                    if item["pbx_call_id"] == pbx_call_id and item["disposition"] is not None:
                        return dict(item)
                await asyncio.sleep(0.05)

    async def calls(self) -> list[dict[str, Any]]:
        answer = await self.api.get("/api/v1/calls", params={"limit": 500})
        assert answer.status_code == 200
        return list(answer.json()["items"])


@contextlib.asynccontextmanager
async def running(
    hub: Hub, hub_url: str, sim_config: SimulatorConfig, events: str = "webhook"
) -> AsyncIterator[Setup]:
    async with YeastarSimulator(sim_config) as sim:
        token = await api_token(hub, "admin")
        headers = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=hub_url, headers=headers, timeout=10.0) as api:
            body = {
                "name": "cloud",
                "kind": "yeastar",
                "base_url": sim.base_url,
                "client_id": sim.config.client_id,
                "client_secret": sim.config.client_secret,
                "webhook_secret": sim.config.webhook_secret,
                "events": events,
            }
            made = await api.post("/api/v1/pbxes", json=body)
            assert made.status_code == 201, made.text
            pbx = made.json()
            assert pbx["webhook_url"].startswith(hub_url + "/webhooks/yeastar/")
            if events == "webhook":
                sim.config.webhook_url = pbx["webhook_url"]  # pasted into the "portal"
            setup = Setup(hub, sim, api, pbx)
            async with asyncio.timeout(10):
                while not setup.link.status().connected:  # noqa: ASYNC110 (status is a snapshot API)
                    await asyncio.sleep(0.02)
            yield setup
            await sim.drain()


@pytest.fixture
async def webhooks(hub: Hub, hub_url: str) -> AsyncIterator[Setup]:
    """Webhook mode; every webhook is sent twice, as a flaky network delivers them."""
    config = SimulatorConfig(webhook_duplicates=True, access_ttl=2)
    async with running(hub, hub_url, config) as setup:
        yield setup


# ------------------------------------------------------------------------------ scenarios


async def test_inbound_answered(webhooks: Setup) -> None:
    call_id = await webhooks.sim.run_scenario("inbound_answered", caller=CALLER, extension="2002")
    call = await webhooks.call(call_id)
    assert call["pbx"] == "cloud"
    assert call["direction"] == "inbound"
    assert (call["from_number"], call["to_number"]) == (CALLER, "6402")  # the dialled DID
    assert call["external_number"] == CALLER
    assert call["disposition"] == "answered"
    assert call["answered_by_extension"] == "2002"
    assert call["transferred_to"] is None
    assert call["answered_at"] is not None and call["ended_at"] is not None
    assert call["started_at"] <= call["answered_at"] <= call["ended_at"]
    assert call["recording"]  # the CDR named a recording


async def test_inbound_missed(webhooks: Setup) -> None:
    call_id = await webhooks.sim.run_scenario("inbound_missed", caller=CALLER, extension="2005")
    call = await webhooks.call(call_id)
    assert call["direction"] == "inbound"
    assert (call["from_number"], call["to_number"]) == (CALLER, "6402")
    assert call["disposition"] == "missed"
    assert call["answered_by_extension"] is None
    assert call["talk_seconds"] == 0 and call["answered_at"] is None


async def test_inbound_busy(webhooks: Setup) -> None:
    call_id = await webhooks.sim.run_scenario("inbound_busy", caller=CALLER, extension="2002")
    call = await webhooks.call(call_id)
    assert call["direction"] == "inbound"
    assert call["from_number"] == CALLER
    assert call["disposition"] == "busy"
    assert call["answered_by_extension"] is None and call["talk_seconds"] == 0


async def test_inbound_transfer(webhooks: Setup) -> None:
    call_id = await webhooks.sim.run_scenario(
        "inbound_transfer", caller=CALLER, extension="2002", target="2005"
    )
    call = await webhooks.call(call_id)
    assert call["direction"] == "inbound" and call["from_number"] == CALLER
    assert call["disposition"] == "answered"
    assert call["answered_by_extension"] == "2002"  # who picked up first
    assert call["transferred_to"] == "2005"


async def test_outbound_call_dial_scenario(webhooks: Setup) -> None:
    call_id = await webhooks.sim.run_scenario("outbound", extension="1005", callee=CUSTOMER)
    call = await webhooks.call(call_id)
    assert call["direction"] == "outbound"
    assert (call["from_number"], call["to_number"]) == ("1005", CUSTOMER)
    assert call["external_number"] == CUSTOMER
    assert call["disposition"] == "answered"
    assert call["answered_by_extension"] == "1005"


async def test_click_to_call_through_the_hub(webhooks: Setup) -> None:
    """The hub's click-to-call path: the running link's ``originate`` → ``call/dial``."""
    link = webhooks.hub.supervisor().get("cloud")
    call_id = await link.originate(Originate(extension="1005", number="+1 415 555 0199"))
    call = await webhooks.call(call_id)
    assert call["direction"] == "outbound"
    assert (call["from_number"], call["to_number"]) == ("1005", CUSTOMER)
    assert call["disposition"] == "answered" and call["answered_by_extension"] == "1005"
    assert any(r.path == "call/dial" for r in webhooks.sim.requests)


async def test_outbound_busy_customer(webhooks: Setup) -> None:
    webhooks.sim.next_dial_outcome = "busy"
    call_id = (
        await webhooks.hub.supervisor().get("cloud").originate(Originate(extension="1005", number=CUSTOMER))
    )
    call = await webhooks.call(call_id)
    assert call["direction"] == "outbound" and call["to_number"] == CUSTOMER
    assert call["disposition"] == "busy"
    assert call["answered_by_extension"] is None and call["talk_seconds"] == 0


async def test_agents_leg_failing_is_not_the_customers_outcome(webhooks: Setup) -> None:
    """``call/dial`` rings the agent first; the agent not answering is a failed call, not the
    customer's no-answer (the CDR says NO ANSWER; the 30015 is on the agent's own leg)."""
    webhooks.sim.next_dial_outcome = "agent_no_answer"
    link = webhooks.hub.supervisor().get("cloud")
    call_id = await link.originate(Originate(extension="1005", number=CUSTOMER))
    call = await webhooks.call(call_id)
    assert call["direction"] == "outbound"
    assert call["to_number"] == CUSTOMER
    assert call["disposition"] == "failed"
    assert call["answered_by_extension"] is None and call["talk_seconds"] == 0


# ------------------------------------------------------------------------------ delivery


async def test_retried_and_duplicated_webhooks_are_logged_once(webhooks: Setup) -> None:
    sim = webhooks.sim
    sim.config.webhook_duplicates = True
    first = await sim.run_scenario("inbound_answered", caller=CALLER)
    second = await sim.run_scenario("inbound_missed", caller="+14155550111")
    await webhooks.call(first)
    await webhooks.call(second)
    await sim.drain()
    assert sim.webhook_deliveries == 2 * len(sim.emitted)  # every event arrived twice, acked
    assert webhooks.link.duplicates >= len(sim.emitted)
    calls = await webhooks.calls()
    assert sorted(c["pbx_call_id"] for c in calls) == sorted([first, second])
    # The timeline holds each event once, not once per delivery.
    one = next(c for c in calls if c["pbx_call_id"] == first)
    detail = (await webhooks.api.get(f"/api/v1/calls/{one['id']}")).json()
    kinds = [e["kind"] for e in detail["events"]]
    assert kinds.count("call_started") == 1 and kinds.count("call_ended") == 1


async def test_a_webhook_retried_after_a_failed_attempt_is_logged_once(webhooks: Setup) -> None:
    """The PBX retries when it sees no 2xx. Make the first attempt of every event fail on the
    wire (the hub got it, the ack was lost) by replaying each body once more by hand."""
    sim = webhooks.sim
    sim.config.webhook_duplicates = False
    call_id = await sim.run_scenario("inbound_answered", caller=CALLER)
    await webhooks.call(call_id)
    await sim.drain()
    url = webhooks.pbx["webhook_url"]
    async with httpx.AsyncClient() as http:
        for event in sim.emitted:
            body = json.dumps(
                {"type": event["type"], "sn": sim.config.sn, "msg": json.dumps(event["msg"])}
            ).encode()  # byte-different from the first delivery, same content
            answer = await http.post(
                url, content=body, headers={"x-signature": sign(body, sim.config.webhook_secret)}
            )
            assert answer.status_code == 200
    call = await webhooks.call(call_id)
    assert call["disposition"] == "answered"
    assert [c["pbx_call_id"] for c in await webhooks.calls()] == [call_id]
    detail = (await webhooks.api.get(f"/api/v1/calls/{call['id']}")).json()
    assert [e["kind"] for e in detail["events"]].count("call_ended") == 1


async def test_forged_webhooks_are_refused_and_log_nothing(webhooks: Setup) -> None:
    sim = webhooks.sim
    real = sim.config.webhook_secret
    sim.config.webhook_secret = "forged-forged-forged-forged-1234"
    sim.config.webhook_retries = 1
    await sim.run_scenario("inbound_answered")
    await sim.drain()
    assert sim.webhook_attempts > 0 and sim.webhook_deliveries == 0  # every attempt got 401
    assert await webhooks.calls() == []
    sim.config.webhook_secret = real


async def test_token_expiry_mid_call_changes_nothing(webhooks: Setup) -> None:
    sim = webhooks.sim
    task = sim.start_scenario("inbound_answered", caller=CALLER, extension="2002", hold_open=True)
    async with asyncio.timeout(10):
        while not any(  # noqa: ASYNC110 (the simulator offers no event to await)
            any(m.status == "ANSWER" for m in c.members.values()) for c in sim.calls.values()
        ):
            await asyncio.sleep(0.02)
    live = next(iter(sim.calls))
    logins = sim.login_count
    sim.expire_access_tokens()  # every token dies while the call is up
    await asyncio.sleep(0.1)
    await webhooks.link.hangup(live)  # the hub re-authenticates and the hang-up still works
    assert await task == live
    call = await webhooks.call(live)
    assert call["disposition"] == "answered" and call["answered_by_extension"] == "2002"
    assert call["from_number"] == CALLER and call["direction"] == "inbound"
    assert sim.login_count + len([r for r in sim.requests if r.path == "refresh_token"]) > logins


# ------------------------------------------------------------------------------ websocket mode


async def test_websocket_mode_logs_the_same_calls(hub: Hub, hub_url: str) -> None:
    config = SimulatorConfig(access_ttl=2)  # the PBX ends the socket each time a token dies
    async with running(hub, hub_url, config, events="websocket") as setup:
        assert setup.link.config.events == "websocket"
        await asyncio.sleep(2.5)  # one token death: the link resubscribes with a fresh token
        answered = await setup.sim.run_scenario("inbound_answered", caller=CALLER, extension="2002")
        missed = await setup.sim.run_scenario("inbound_missed", caller=CALLER, extension="2005")
        outbound = await setup.sim.run_scenario("outbound", extension="1005", callee=CUSTOMER)
        a, m, o = [await setup.call(c) for c in (answered, missed, outbound)]
        assert (a["direction"], a["from_number"], a["disposition"], a["answered_by_extension"]) == (
            "inbound",
            CALLER,
            "answered",
            "2002",
        )
        assert (m["direction"], m["to_number"], m["disposition"]) == ("inbound", "6402", "missed")
        assert (o["direction"], o["to_number"], o["disposition"]) == ("outbound", CUSTOMER, "answered")
        assert setup.sim.webhook_attempts == 0  # nothing came by webhook
        assert setup.link._subscription is not None and setup.link._subscription.connects >= 2
