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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from tests.conftest import add_user, api_token

from callbridge.config import Settings
from callbridge.domain.errors import PbxUnavailable
from callbridge.domain.pbx import PbxKind
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.pbx.yeastar.inbox import StoredWebhook
from callbridge.pbx.yeastar.link import YeastarConfig, YeastarLink
from callbridge.pbx.yeastar.simulator import SimulatorConfig, YeastarSimulator
from callbridge.pbx.yeastar.webhooks import sign
from callbridge.services.calllog import IngestFailed
from callbridge.services.pbxes import YeastarSettings, add_pbx
from callbridge.services.ports import Originate
from callbridge.store.calls import CallFilter
from callbridge.web.app import create_app

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

    async def call(self, pbx_call_id: str, within: float = 20.0) -> dict[str, Any]:
        """The call's record from the API once it is complete (the PBX's CDR was ingested)."""
        async with asyncio.timeout(within):
            while True:  # the API is the thing under test: poll it, briefly
                answer = await self.api.get("/api/v1/calls", params={"limit": 500})
                assert answer.status_code == 200, answer.text
                for item in answer.json()["items"]:
                    if item["pbx_call_id"] == pbx_call_id and item["disposition"] is not None:
                        return dict(item)
                await asyncio.sleep(0.05)

    async def post_signed(self, body: bytes) -> httpx.Response:
        """``body`` to the PBX's webhook URL, signed with its secret, as the PBX sends it."""
        async with httpx.AsyncClient() as http:
            return await http.post(
                self.pbx["webhook_url"],
                content=body,
                headers={"x-signature": sign(body, self.sim.config.webhook_secret)},
            )

    async def calls(self) -> list[dict[str, Any]]:
        answer = await self.api.get("/api/v1/calls", params={"limit": 500})
        assert answer.status_code == 200
        return list(answer.json()["items"])


@contextlib.asynccontextmanager
async def running(
    hub: Hub,
    hub_url: str,
    sim_config: SimulatorConfig,
    events: str = "webhook",
    queues: dict[str, str] | None = None,
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
            if queues is not None:
                body["queues"] = queues
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
    started, answered, ended = (
        datetime.fromisoformat(call[k]) for k in ("started_at", "answered_at", "ended_at")
    )
    assert started <= answered <= ended
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
    assert call["answered_by_extension"] is None  # the customer answered
    assert call["placed_by_extension"] == "1005"


async def test_click_to_call_through_the_hub(webhooks: Setup) -> None:
    """The hub's click-to-call path: the running link's ``originate`` → ``call/dial``."""
    link = webhooks.hub.supervisor().get("cloud")
    call_id = await link.originate(Originate(extension="1005", number="+1 415 555 0199"))
    call = await webhooks.call(call_id)
    assert call["direction"] == "outbound"
    assert (call["from_number"], call["to_number"]) == ("1005", CUSTOMER)
    assert call["disposition"] == "answered" and call["answered_by_extension"] is None
    assert call["placed_by_extension"] == "1005"
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


# ------------------------------------------------------------------------------ inbox


def _signed_bodies(sim: YeastarSimulator) -> list[tuple[bytes, str]]:
    out = []
    for event in sim.emitted:
        envelope = {"type": event["type"], "sn": sim.config.sn, "msg": json.dumps(event["msg"])}
        body = json.dumps(envelope).encode()
        out.append((body, sign(body, sim.config.webhook_secret)))
    return out


async def test_a_webhook_stored_before_a_crash_is_processed_after_restart(
    hub: Hub, settings: Settings
) -> None:
    async with YeastarSimulator(SimulatorConfig()) as sim:
        call_id = await sim.run_scenario("inbound_answered", caller=CALLER, extension="2002")
        async with hub.db.unit() as repos:
            record = await add_pbx(
                repos.pbxes,
                "cloud",
                PbxKind.YEASTAR,
                YeastarSettings(
                    base_url=sim.base_url,
                    client_id=sim.config.client_id,
                    client_secret=sim.config.client_secret,
                    webhook_secret=sim.config.webhook_secret,
                ),
            )
            await repos.commit()
        # First life: the link acknowledges every webhook (stored), then the process dies
        # before its consumer ran (run() never started).
        first = hub.link_factories()[PbxKind.YEASTAR](
            record, {"webhook_secret": sim.config.webhook_secret}, hub.handle_event
        )
        assert isinstance(first, YeastarLink)
        for body, signature in _signed_bodies(sim):
            assert await first.handle_webhook(body, signature) == 1
        assert first.inbox is not None and first.inbox.commits >= 1 and first.messages == 0
        await first.client.aclose()

        # Second life: a new hub on the same database drains the inbox when its link starts.
        second = Hub.build(settings)
        await second.prepare()
        try:
            await second.start_links()
            link = second.supervisor().get("cloud")
            assert isinstance(link, YeastarLink)
            async with asyncio.timeout(10):
                while link.inbox_processed < len(sim.emitted):  # noqa: ASYNC110 (a counter, no event)
                    await asyncio.sleep(0.02)
            app = create_app(hub=second)
            token = await api_token(second, "admin")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://hub") as api:
                items = (await api.get("/api/v1/calls", headers={"authorization": f"Bearer {token}"})).json()[
                    "items"
                ]
            assert [(c["pbx_call_id"], c["disposition"], c["answered_by_extension"]) for c in items] == [
                (call_id, "answered", "2002")
            ]
            assert await second.inbox_store().pending("cloud", 10) == []  # consumed, then deleted
        finally:
            await second.close()


async def test_webhooks_wait_in_the_inbox_while_the_call_log_refuses_writes(
    webhooks: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database fails while a drained batch is ingested: the webhooks are not marked done,
    and once it is back the same calls come out, exactly once."""
    monkeypatch.setattr("callbridge.pbx.yeastar.link.STORE_RETRY_FIRST", 0.05)
    hub = webhooks.hub
    stored = hub.ingest_batch
    refusals = 3

    async def down_for_a_while(events: Any) -> Any:
        nonlocal refusals
        if refusals > 0:
            refusals -= 1
            raise IngestFailed("could not store any of the events")
        return await stored(events)

    monkeypatch.setattr(hub, "ingest_batch", down_for_a_while)
    call_id = await webhooks.sim.run_scenario("inbound_answered", caller=CALLER, extension="2002")
    call = await webhooks.call(call_id)
    assert (call["disposition"], call["answered_by_extension"]) == ("answered", "2002")
    assert webhooks.link.store_failures == 3
    async with asyncio.timeout(5):
        while await hub.inbox_store().pending("cloud", 10):  # noqa: ASYNC110 (a table, no event)
            await asyncio.sleep(0.02)
    async with hub.db.unit() as repos:
        found, _ = await repos.calls.search(CallFilter(), limit=10)
    assert [c.pbx_call_id for c in found] == [call_id]


class _BrokenStore:
    def __init__(self, local: bool) -> None:
        self.local = local  # a file on this thread (add_now) or a database server (add)

    async def add(self, pbx: str, items: Sequence[tuple[datetime, bytes]]) -> None:
        raise OSError("disk full")

    def add_now(self, pbx: str, items: Sequence[tuple[datetime, bytes]]) -> bool:
        if self.local:
            raise OSError("disk full")
        return False

    async def pending(self, pbx: str, limit: int) -> list[StoredWebhook]:
        return []

    async def done(self, pbx: str, ids: Sequence[int], seen: Sequence[str] = ()) -> None:
        return None

    async def seen(self, pbx: str, keys: Sequence[str]) -> set[str]:
        return set()


@pytest.mark.parametrize("local", [True, False])
async def test_a_webhook_that_cannot_be_stored_is_refused_for_a_retry_not_lost(local: bool) -> None:
    events: list[object] = []

    async def sink(event: object) -> None:
        events.append(event)

    config = YeastarConfig("cloud", "http://127.0.0.1:9", "id", "secret", webhook_secret="w" * 32)
    link = YeastarLink(config, sink, inbox=_BrokenStore(local))
    body = json.dumps(
        {"type": 30011, "sn": "x", "msg": json.dumps({"call_id": "1.1", "members": []})}
    ).encode()
    with pytest.raises(PbxUnavailable):  # → 503: the PBX retries later
        await link.handle_webhook(body, sign(body, "w" * 32))
    with pytest.raises(PbxUnavailable):  # not remembered as stored: the retry is not dropped
        await link.handle_webhook(body, sign(body, "w" * 32))
    assert link.duplicates == 0 and events == []
    await link.client.aclose()


async def test_storage_failure_answers_503_not_500(webhooks: Setup) -> None:
    link = webhooks.link
    assert link.inbox is not None
    healthy = link.inbox.store
    link.inbox.store = _BrokenStore(local=True)
    body = json.dumps(
        {"type": 30011, "sn": "x", "msg": json.dumps({"call_id": "9.9", "members": []})}
    ).encode()
    answer = await webhooks.post_signed(body)
    link.inbox.store = healthy
    assert answer.status_code == 503


async def test_a_payload_the_driver_cannot_read_is_dropped_after_the_ack_not_the_rest(
    webhooks: Setup,
) -> None:
    """The ack checks the signature and the envelope; the payload is read after it. A signed
    event whose payload lacks what the driver needs is acknowledged (the PBX would only send it
    again), counted and logged as dropped, and the events behind it are processed."""
    body = json.dumps(
        {"type": 30011, "sn": webhooks.sim.config.sn, "msg": json.dumps({"members": []})}
    ).encode()
    answer = await webhooks.post_signed(body)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    call_id = await webhooks.sim.run_scenario("inbound_answered", caller=CALLER, extension="2002")
    assert (await webhooks.call(call_id))["disposition"] == "answered"
    assert webhooks.link.malformed == 1
    assert [c["pbx_call_id"] for c in await webhooks.calls()] == [call_id]


def _call_bodies(n: int, secret: str) -> list[tuple[bytes, str]]:
    """The four webhooks of an inbound call answered at 2002, signed."""
    call_id = f"1700000000.{n}"
    trunk = {"from": f"+1415555{n:04d}", "to": "6402", "trunk_name": "t", "channel_id": f"PJSIP/t-{n}"}
    ext = {"number": "2002", "channel_id": f"PJSIP/2002-{n}"}

    def members(*pairs: tuple[str, dict[str, str], str]) -> list[dict[str, object]]:
        return [{kind: {**member, "member_status": status}} for kind, member, status in pairs]

    msgs = [
        (
            30011,
            {"call_id": call_id, "members": members(("inbound", trunk, "ALERT"), ("extension", ext, "RING"))},
        ),
        (
            30011,
            {
                "call_id": call_id,
                "members": members(("inbound", trunk, "ANSWERED"), ("extension", ext, "ANSWER")),
            },
        ),
        (
            30011,
            {"call_id": call_id, "members": members(("inbound", trunk, "BYE"), ("extension", ext, "BYE"))},
        ),
        (
            30012,
            {
                "call_id": call_id,
                "time_start": "2025-03-01 10:00:00",
                "call_from": trunk["from"],
                "call_to": "2002",
                "call_duration": 10,
                "talk_duration": 8,
                "status": "ANSWERED",
                "type": "Inbound",
            },
        ),
    ]
    out = []
    for event_type, msg in msgs:
        body = json.dumps({"type": event_type, "sn": "SN", "msg": json.dumps(msg)}).encode()
        out.append((body, sign(body, secret)))
    return out


async def test_a_burst_of_webhooks_is_acknowledged_first_and_ingested_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While webhooks pour in faster than BURST_RATE the consumer stands back (the acks get the
    event loop) but still makes progress; once the burst is over it drains the inbox."""
    from callbridge.store.inbox import SqliteInbox

    monkeypatch.setattr("callbridge.pbx.yeastar.link.COALESCE_SECONDS", 0.0)
    # Fewer parsed bodies kept than the burst holds: the oldest are parsed again from the inbox.
    monkeypatch.setattr("callbridge.pbx.yeastar.link.PARSED_KEPT", 100)
    ingested: list[object] = []

    async def slow_sink(events: Sequence[object]) -> None:
        deadline = asyncio.get_running_loop().time() + 0.0005 * len(events)
        while asyncio.get_running_loop().time() < deadline:  # CPU, as ingest spends it
            pass
        ingested.extend(events)

    async def sink(event: object) -> None:
        raise AssertionError("events go in batches")

    secret = "w" * 32
    store = SqliteInbox(tmp_path / "inbox.db")
    config = YeastarConfig("cloud", "http://127.0.0.1:9", "id", "secret", webhook_secret=secret)
    link = YeastarLink(config, sink, inbox=store, batch_sink=slow_sink)
    assert link.inbox is not None
    consumer = asyncio.create_task(link._process_inbox(link.inbox))
    try:
        # A quiet PBX: nothing waits.
        for body, signature in _call_bodies(0, secret):
            assert await link.handle_webhook(body, signature) == 1
            await asyncio.sleep(0.02)
        async with asyncio.timeout(5):
            while link.inbox_processed < 4:  # noqa: ASYNC110 (a counter, no event)
                await asyncio.sleep(0.01)
        assert link.paced_seconds == 0
        # A burst: 300 calls' webhooks as fast as they can be acknowledged.
        bodies = [item for n in range(1, 301) for item in _call_bodies(n, secret)]
        for body, signature in bodies:
            assert await link.handle_webhook(body, signature) == 1
        during = link.inbox_processed - 4
        assert link.paced_seconds > 0  # the consumer stood back...
        assert during > 0  # ...but kept going
        async with asyncio.timeout(30):
            while link.inbox_processed < 4 + len(bodies):  # noqa: ASYNC110 (a counter, no event)
                await asyncio.sleep(0.01)
        assert await store.pending("cloud", 1) == []
        assert {getattr(e, "call_id", None) for e in ingested} == {f"1700000000.{n}" for n in range(301)}
        assert link.malformed == 0
        assert link._parsed == {} and link._parsed_bytes == 0  # nothing left over in memory
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await store.close()
        await link.client.aclose()


async def test_a_call_whose_webhooks_arrive_in_one_burst_keeps_the_pbx_times(webhooks: Setup) -> None:
    """The PBX was cut off from the hub during the call and delivers it all at once, minutes
    later: the call log shows the start, ring and talk time of the CDR, not of the burst."""
    from datetime import UTC, timedelta

    start = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
    call_id = f"{int(start.timestamp())}.777"
    trunk, ext = "PJSIP/trunk-stc-endpoint-00000091", "PJSIP/2002-00000092"

    def members(trunk_status: str, ext_status: str) -> list[dict[str, Any]]:
        return [
            {"inbound": {"from": CALLER, "to": "6402", "trunk_name": "stc", "channel_id": trunk,
                         "member_status": trunk_status, "call_path": ""}},
            {"extension": {"number": "2002", "channel_id": ext, "member_status": ext_status,
                           "call_path": ""}},
        ]  # fmt: skip

    cdr = {
        "call_id": call_id,
        "time_start": start.strftime("%Y-%m-%d %H:%M:%S"),  # the PBX's local time: UTC here
        "call_from": CALLER,
        "call_to": "2002",
        "call_duration": 75,
        "talk_duration": 63,
        "src_trunk_name": "stc",
        "dst_trunk_name": " ",
        "pin_code": " ",
        "status": "ANSWERED",
        "type": "Inbound",
        "recording": "",
        "did_number": "6402",
        "agent_ring_time": 12,
    }
    bodies = [
        (30011, {"call_id": call_id, "members": members("ALERT", "RING")}),
        (30011, {"call_id": call_id, "members": members("ANSWERED", "ANSWER")}),
        (30011, {"call_id": call_id, "members": members("BYE", "ANSWER")}),
        (30011, {"call_id": call_id, "members": members("BYE", "BYE")}),
        (30012, cdr),
    ]
    envelopes = [
        json.dumps({"type": t, "sn": webhooks.sim.config.sn, "msg": json.dumps(m)}).encode()
        for t, m in bodies
    ]
    answers = await asyncio.gather(*(webhooks.post_signed(body) for body in envelopes))
    assert [a.status_code for a in answers] == [200] * len(envelopes)
    call = await webhooks.call(call_id)
    assert call["disposition"] == "answered" and call["answered_by_extension"] == "2002"
    assert datetime.fromisoformat(call["started_at"]) == start
    assert datetime.fromisoformat(call["answered_at"]) == start + timedelta(seconds=12)
    assert datetime.fromisoformat(call["ended_at"]) == start + timedelta(seconds=75)
    assert (call["ring_seconds"], call["talk_seconds"]) == (12, 63)


async def test_webhooks_replayed_after_a_restart_are_known_and_change_nothing(
    hub: Hub, settings: Settings
) -> None:
    async with YeastarSimulator(SimulatorConfig()) as sim:
        call_id = await sim.run_scenario("inbound_missed", caller=CALLER, extension="2002")
        bodies = _signed_bodies(sim)
        async with hub.db.unit() as repos:
            await add_pbx(
                repos.pbxes,
                "cloud",
                PbxKind.YEASTAR,
                YeastarSettings(
                    base_url=sim.base_url,
                    client_id=sim.config.client_id,
                    client_secret=sim.config.client_secret,
                    webhook_secret=sim.config.webhook_secret,
                ),
            )

        async def deliver(the_hub: Hub) -> YeastarLink:
            await the_hub.start_links()
            link = the_hub.supervisor().get("cloud")
            assert isinstance(link, YeastarLink)
            for body, signature in bodies:
                await link.handle_webhook(body, signature)
            async with asyncio.timeout(10):
                while link.inbox_processed < len(bodies):  # noqa: ASYNC110 (a counter, no event)
                    await asyncio.sleep(0.02)
            return link

        async def stored(the_hub: Hub) -> tuple[Any, int]:
            async with the_hub.db.unit() as repos:
                found, _ = await repos.calls.search(CallFilter(), limit=10)
                assert [c.pbx_call_id for c in found] == [call_id]
                return found[0], len(await repos.calls.events(found[0].id))

        first = await deliver(hub)
        assert first.messages == len(bodies) and first.duplicates == 0
        call, events = await stored(hub)
        assert call.disposition is not None
        await hub.close()

        # A new process on the same database (its memory of webhooks is gone); the PBX (or
        # whoever kept the signed bodies) sends the same bodies again, later.
        await asyncio.sleep(1.1)
        second = Hub.build(settings)
        await second.prepare()
        try:
            link = await deliver(second)
            assert link.duplicates == len(bodies) and link.messages == 0  # known, never mapped
            after, events_after = await stored(second)
            assert (after.ended_at, after.ring_seconds, events_after) == (
                call.ended_at,
                call.ring_seconds,
                events,
            )
        finally:
            await second.close()


async def test_a_recording_is_downloaded_through_the_openapi_and_served_by_the_hub(webhooks: Setup) -> None:
    """The CDR names the file; the hub asks recording/download for a download path, fetches it
    with its token (after the PBX refused twice: retried with back-off), stores it, and serves
    it itself: the PBX's address and token never reach the API."""
    from callbridge.pbx.yeastar.simulator import silent_wav
    from callbridge.services.recordings import FetchPolicy

    assert webhooks.hub.fetcher is not None
    webhooks.hub.fetcher.policy = FetchPolicy(base_delay=0.05, max_delay=0.2, max_attempts=5)
    audio = silent_wav(1.5) + b""  # 1.5 s of 8 kHz PCM
    webhooks.sim.default_recording = audio
    webhooks.sim.fail_downloads = 2
    call_id = await webhooks.sim.run_scenario("inbound_answered", caller=CALLER, extension="2002")
    row = (await webhooks.call(call_id))["id"]
    async with asyncio.timeout(20):
        while True:
            detail = (await webhooks.api.get(f"/api/v1/calls/{row}")).json()
            if detail["recording"] and detail["recording"]["status"] == "ready":
                break
            await asyncio.sleep(0.05)
    recording = detail["recording"]
    assert recording["size_bytes"] == len(audio) and recording["duration_seconds"] == 1.5
    assert recording["content_type"] == "audio/wav"
    assert webhooks.sim.downloads == 3  # two refusals, then the file
    text = json.dumps(detail)
    assert webhooks.sim.base_url not in text and "access_token" not in text
    served = await webhooks.api.get(recording["audio_url"], headers={"range": "bytes=0-43"})
    assert served.status_code == 206 and served.content == audio[:44]


# ------------------------------------------------------------------------------ queues


async def test_queue_calls_land_with_their_queue_and_figures_and_an_ivr_is_no_queue(
    hub: Hub, hub_url: str
) -> None:
    """Queue 6400 is listed as "sales" on the PBX; 6200 (an IVR) is not listed. Answered,
    abandoned and short-abandoned queue calls, as the simulator's webhooks report them, land
    with their queue on the call, in the queue's figures and in analytics by queue; what
    Yeastar does not report (unanswered rings, why a caller left, members' log) is null."""
    config = SimulatorConfig(webhook_duplicates=True)
    async with running(hub, hub_url, config, queues={"6400": "sales", "6401": ""}) as setup:
        assert setup.pbx["config"]["queues"] == {"6400": "sales", "6401": "6401"}
        sim = setup.sim
        answered_id = await sim.run_scenario("inbound_queue", queue="6400", wait=12, talk=42)
        abandoned_id = await sim.run_scenario("inbound_queue", queue="6400", outcome="abandoned", wait=30)
        short_id = await sim.run_scenario("inbound_queue", queue="6400", outcome="abandoned", wait=3)
        ivr_id = await sim.run_scenario("inbound_queue", queue="6200", agents=("2005",), wait=5)
        answered = await setup.call(answered_id)
        abandoned = await setup.call(abandoned_id)
        short = await setup.call(short_id)
        ivr = await setup.call(ivr_id)

        assert answered["disposition"] == "answered" and answered["answered_by_extension"] == "2002"
        assert answered["queue"]["name"] == "sales"
        detail = (await setup.api.get(f"/api/v1/calls/{answered['id']}")).json()
        queue = detail["queue"]
        # The caller went straight to the queue: it entered at the call's start (the CDR's).
        assert datetime.fromisoformat(queue.pop("entered_at")) == datetime.fromisoformat(detail["started_at"])
        assert sorted(queue.pop("agents_rung")) == ["2002", "2005"]  # rung together
        assert queue == {
            "name": "sales",
            "wait_seconds": 12,
            "outcome": "answered",
            "answered_by_extension": "2002",
            "talk_seconds": 42,
            "rings_unanswered": None,  # Yeastar does not report them: unknown, not none
            "visits": 1,
        }
        assert (abandoned["queue"]["outcome"], abandoned["queue"]["wait_seconds"]) == ("abandoned", 30)
        assert abandoned["queue"]["answered_by_extension"] is None
        assert (short["queue"]["outcome"], short["queue"]["wait_seconds"]) == ("abandoned", 3)
        # 6200 is on the call's path but not listed as a queue: no queue.
        assert ivr["disposition"] == "answered" and ivr["queue"] is None

        listed = [q["name"] for q in (await setup.api.get("/api/v1/queues")).json()["items"]]
        assert "sales" in listed and "6401" in listed  # listed ones are known before any call
        assert "6200" not in listed
        missing = await setup.api.get("/api/v1/queues/6200/stats")
        assert missing.status_code == 404 and "6200" in missing.json()["error"]["message"]

        stats = (await setup.api.get("/api/v1/queues/sales/stats")).json()
        assert {
            k: stats[k] for k in ("offered", "answered", "abandoned", "short_abandoned", "other_left")
        } == {
            "offered": 2,
            "answered": 1,
            "abandoned": 1,
            "short_abandoned": 1,
            "other_left": 0,
        }
        assert stats["answer_rate"] == 0.5 and stats["service_level"] == 0.5  # 12 s ≤ 20 s
        assert stats["avg_answer_seconds"] == 12.0
        assert stats["avg_wait_seconds"] == 21.0 and stats["max_wait_seconds"] == 30
        assert stats["avg_handle_seconds"] == 42.0
        # Not measured on a Yeastar: null, not zero.
        assert [stats[k] for k in ("timed_out", "full", "join_empty", "leave_empty")] == [None] * 4
        agents = {a["extension"]: a for a in stats["agents"]}
        assert set(agents) == {"2002", "2005"}
        assert agents["2002"] == {
            "extension": "2002",
            "user": None,
            "answered": 1,
            "ring_no_answer": None,
            "talk_seconds": 42,
            "avg_handle_seconds": 42.0,
            "logged_in_seconds": None,
            "paused_seconds_by_reason": None,
        }
        assert agents["2005"]["answered"] == 0 and agents["2005"]["ring_no_answer"] is None

        # An agent who owns nothing: the queue's totals (the team's), no agent's row, no call.
        await add_user(setup.hub, "nobody", Role.AGENT)
        nobody = {"authorization": f"Bearer {await api_token(setup.hub, 'nobody')}"}
        theirs = (await setup.api.get("/api/v1/queues/sales/stats", headers=nobody)).json()
        assert theirs["offered"] == 2 and theirs["agents"] == []
        hidden = await setup.api.get(f"/api/v1/calls/{answered['id']}", headers=nobody)
        assert hidden.status_code == 404
        pbx_settings = await setup.api.get("/api/v1/pbxes/cloud", headers=nobody)
        assert pbx_settings.status_code == 403

        today = datetime.now(UTC).date()
        period = {"from": today.isoformat(), "to": (today + timedelta(days=1)).isoformat(), "tz": "UTC"}
        by_queue = (await setup.api.get("/api/v1/analytics/calls", params=period | {"group": "queue"})).json()
        groups = {g["key"]: g for g in by_queue["groups"]}
        assert groups["sales"]["offered"] == 3 and groups["sales"]["answered"] == 1
        assert "6200" not in groups
