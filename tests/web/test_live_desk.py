"""The live desk over a real socket: the hub serves on 127.0.0.1, its Asterisk link talks to the
AMI simulator, and Python WebSocket clients stand in for the browser tabs of two users."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from tests.conftest import add_user

from callbridge.domain.directory import ContactKind, Phone
from callbridge.domain.pbx import PbxKind
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.pbx.asterisk.simulator import AmiSimulator
from callbridge.services.directory import ContactInput
from callbridge.services.pbxes import AsteriskSettings, add_pbx
from callbridge.store.calls import CallFilter
from callbridge.web.app import create_app
from callbridge.web.live import MAX_CLIENT_FRAME, sockets_of

SECRET = "ami-secret-for-desk-tests"
PASSWORD = "user-password-1"
ADA = "+14155550100"


@contextlib.asynccontextmanager
async def closing(client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    try:
        yield client
    finally:
        await client.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Desk:
    hub: Hub
    sim: AmiSimulator
    url: str
    users: dict[str, int]
    ada_id: int
    app: Any = None

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/live/ws"

    async def client(self, name: str) -> tuple[httpx.AsyncClient, str]:
        """A signed-in HTTP client and its session cookie header."""
        c = httpx.AsyncClient(base_url=self.url, timeout=10)
        page = await c.get("/login", headers={"accept": "text/html"})
        import re

        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token
        answer = await c.post(
            "/login", data={"username": name, "password": PASSWORD, "csrf_token": token.group(1), "next": "/"}
        )
        assert answer.status_code == 303, answer.text
        # Sign-in replaced the login page's CSRF token: take the session's from a page.
        fresh = re.search(r'name="csrf_token" value="([^"]+)"', (await c.get("/settings")).text)
        assert fresh
        c.headers["x-csrf-token"] = fresh.group(1)
        cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
        return c, cookie


class Tab:
    """One browser tab's socket, collecting what it receives."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self._new = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                data = json.loads(raw)  # one message, or a frame of several (a JSON array)
                self.messages.extend(data if isinstance(data, list) else [data])
                self._new.set()

    async def wait_for(self, check: Callable[[dict[str, Any]], bool], within: float = 5.0) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            seen = 0
            while True:
                for msg in self.messages[seen:]:
                    if check(msg):
                        return msg
                seen = len(self.messages)
                self._new.clear()
                await self._new.wait()

        return await asyncio.wait_for(find(), within)

    def cards(self) -> list[dict[str, Any]]:
        return [m["card"] for m in self.messages if m.get("type") == "card"]

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest.fixture
async def desk(hub: Hub) -> AsyncIterator[Desk]:
    users = {}
    for name, role in (
        ("alice", Role.AGENT),
        ("bob", Role.AGENT),
        ("carol", Role.MANAGER),
        ("dave", Role.AGENT),
    ):
        users[name] = (await add_user(hub, name, role, PASSWORD)).id
    async with AmiSimulator(username="hub", secret=SECRET, auth_failure_delay=0.05, cel=True) as sim:
        async with hub.db.unit() as repos:
            record = await add_pbx(
                repos.pbxes,
                "office",
                PbxKind.ASTERISK,
                AsteriskSettings(
                    host="127.0.0.1", port=sim.port, username="hub", secret=SECRET, trunks=("trunk*",)
                ),
            )
            for name, ext in (("alice", "1001"), ("bob", "1002"), ("carol", "1003")):
                await repos.extensions.map("office", ext, users[name])
            company = await repos.directory.create(
                ContactInput(kind=ContactKind.COMPANY, name="Analytical Engines")
            )
            ada = await repos.directory.create(
                ContactInput(
                    kind=ContactKind.PERSON,
                    name="Ada Lovelace",
                    company_id=company,
                    phones=(Phone("(415) 555-0100", ADA),),
                    tags=("VIP", "Engines"),
                    owner_id=users["alice"],
                )
            )
        app = create_app(hub=hub)
        async with app.router.lifespan_context(app):
            await hub.start_link(record)
            port = free_port()
            server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
            )
            task = asyncio.create_task(server.serve())
            for _ in range(100):
                if server.started and sim.logins:
                    break
                await asyncio.sleep(0.05)
            assert server.started and sim.logins == 1
            yield Desk(hub, sim, f"http://127.0.0.1:{port}", users, ada, app)
            server.should_exit = True
            await task


@pytest.fixture
async def tab(desk: Desk) -> AsyncIterator[Callable[[str], Awaitable[Tab]]]:
    opened: list[Tab] = []
    clients: list[httpx.AsyncClient] = []

    async def open_tab(name: str) -> Tab:
        client, cookie = await desk.client(name)
        clients.append(client)
        ws = await websockets.connect(desk.ws_url, additional_headers={"Cookie": cookie})
        t = Tab(ws)
        opened.append(t)
        await t.wait_for(lambda m: m["type"] == "hello")
        return t

    yield open_tab
    for t in opened:
        await t.close()
    for c in clients:
        await c.aclose()


async def test_pop_reaches_the_rung_user_in_every_tab_and_follows_the_call(desk: Desk, tab: Any) -> None:
    alice1, alice2, bob = await tab("alice"), await tab("alice"), await tab("bob")
    call = await desk.sim.start_call("inbound", caller=ADA, extension="1001", ring=0.3)
    for alice in (alice1, alice2):
        ringing = await alice.wait_for(lambda m: m["type"] == "card" and m["card"]["state"] == "ringing")
        card = ringing["card"]
        assert card["number"] == ADA
        assert card["contact"]["name"] == "Ada Lovelace"
        assert card["company"] == "Analytical Engines"
        assert card["tags"] == ["Engines", "VIP"]
        assert card["owner"] == "alice"
        assert card["extension"] == "1001"
        assert card["can_hangup"] is True and card["can_answer"] is False
        await alice.wait_for(lambda m: m["type"] == "card" and m["card"]["state"] == "talking")
    await asyncio.sleep(1.1)
    await call.hangup("caller")
    ended = await alice1.wait_for(lambda m: m["type"] == "card" and m["card"]["state"] == "ended")
    assert ended["card"]["disposition"] == "answered"
    assert ended["card"]["talk_seconds"] >= 1
    # Bob heard the presence change of 1001, never Alice's card.
    await bob.wait_for(lambda m: m["type"] == "presence" and m["extension"] == "1001")
    assert bob.cards() == []
    # The next call of Ada shows this one among the last calls.
    call2 = await desk.sim.start_call("inbound", caller=ADA, extension="1001")
    second = await alice1.wait_for(lambda m: m["type"] == "card" and m["card"]["key"] != ended["card"]["key"])
    assert [r["id"] for r in second["card"]["recent"]] == [ended["card"]["id"]]
    await call2.hangup("callee")


async def test_pop_does_not_wait_for_the_call_log(desk: Desk, tab: Any, monkeypatch: Any) -> None:
    """The card goes out while the call log is still storing the ring (here: held back), with
    the contact already looked up; the call log's card (with the call's id) replaces it."""
    alice, bob = await tab("alice"), await tab("bob")
    gate = asyncio.Event()
    stored = desk.hub.ingest_batch

    async def held_back(events: Any) -> Any:
        await gate.wait()
        return await stored(events)

    monkeypatch.setattr(desk.hub, "ingest_batch", held_back)
    call = await desk.sim.start_call("inbound", caller=ADA, extension="1001", ring=5)
    early = (await alice.wait_for(lambda m: m["type"] == "card"))["card"]
    assert early["id"] is None and early["state"] == "ringing"
    assert early["contact"]["name"] == "Ada Lovelace" and early["company"] == "Analytical Engines"
    assert early["tags"] == ["Engines", "VIP"] and early["owner"] == "alice"
    assert early["extension"] == "1001" and early["number"] == ADA
    async with desk.hub.db.unit() as repos:
        assert (await repos.calls.search(CallFilter(), limit=10))[0] == []  # nothing stored yet
    gate.set()
    logged = await alice.wait_for(lambda m: m["type"] == "card" and m["card"]["id"] is not None)
    assert logged["card"]["key"] == early["key"] and logged["card"]["state"] == "ringing"
    await call.hangup("caller")
    await alice.wait_for(lambda m: m["type"] == "card" and m["card"]["state"] == "ended")
    assert bob.cards() == []


async def test_tabs_of_a_disabled_or_signed_out_user_are_closed(desk: Desk, tab: Any) -> None:
    alice, bob = await tab("alice"), await tab("bob")
    sockets = sockets_of(desk.app)
    assert await sockets.recheck(desk.hub) == 0
    async with desk.hub.db.unit() as repos:
        await desk.hub.accounts(repos).set_active("bob", False)  # e.g. `callbridge user disable bob`
    assert await sockets.recheck(desk.hub) == 1
    await asyncio.wait_for(bob.ws.wait_closed(), 5)
    assert bob.ws.close_code == 4401
    # Alice's tab stays, and still gets her pops.
    await desk.sim.place_call("inbound_answered", caller=ADA, extension="1001")
    await alice.wait_for(lambda m: m["type"] == "card")
    async with desk.hub.db.unit() as repos:
        await desk.hub.accounts(repos).set_password("alice", PASSWORD + "x")  # signs out everywhere
    assert await sockets.recheck(desk.hub) == 1


async def test_a_tab_opened_while_sessions_are_rechecked_stays_open(
    desk: Desk, tab: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The re-check reads the database; a tab that connects meanwhile was not part of what it
    asked about and must not be taken for a signed-out one."""
    from callbridge.store.users import SqlUserStore

    alice = await tab("alice")
    asking, answer = asyncio.Event(), asyncio.Event()
    signed_in = SqlUserStore.signed_in

    async def slow(self: SqlUserStore, sessions: set[tuple[int, int]]) -> set[tuple[int, int]]:
        asking.set()
        await answer.wait()
        return await signed_in(self, sessions)

    monkeypatch.setattr(SqlUserStore, "signed_in", slow)
    sockets = sockets_of(desk.app)
    recheck = asyncio.create_task(sockets.recheck(desk.hub))
    await asyncio.wait_for(asking.wait(), 5)
    bob = await tab("bob")  # connects while the query runs
    answer.set()
    assert await recheck == 0
    await desk.sim.place_call("inbound_answered", caller=ADA, extension="1002")
    await bob.wait_for(lambda m: m["type"] == "card")
    assert bob.ws.close_code is None and alice.ws.close_code is None


async def test_unknown_caller_pops_as_unknown(desk: Desk, tab: Any) -> None:
    bob = await tab("bob")
    await desk.sim.place_call("inbound_answered", caller="+12025550199", extension="1002")
    card = (await bob.wait_for(lambda m: m["type"] == "card"))["card"]
    assert card["contact"] is None and card["company"] is None and card["match"] == "none"
    assert card["number"] == "+12025550199"
    # Shown as people read it: national in the hub's region (US here), stored E.164 unchanged.
    assert card["number_display"] == "(202) 555-0199"


async def test_missed_call_leaves_a_notification_that_survives(desk: Desk, tab: Any) -> None:
    alice = await tab("alice")
    await desk.sim.place_call("inbound_missed", caller=ADA, extension="1001", ring=0.1)
    note = (await alice.wait_for(lambda m: m["type"] == "notification"))["notification"]
    assert note["title"] == "Missed call from Ada Lovelace"
    assert note["body"]["number"] == ADA and note["read"] is False
    client, _ = await desk.client("alice")
    async with closing(client):
        listed = (await client.get("/api/v1/notifications")).json()
        assert listed["unread"] == 1 and listed["items"][0]["id"] == note["id"]
        # A new tab (a reload) learns the count from its hello.
        again = await tab("alice")
        assert again.messages[0]["unread"] == 1
        read = await client.post(f"/api/v1/notifications/{note['id']}/read")
        assert read.status_code == 200 and read.json() == {"unread": 0}
        missing = await client.post("/api/v1/notifications/999999/read")
        assert missing.status_code == 404
    bob_client, _ = await desk.client("bob")
    async with closing(bob_client):
        assert (await bob_client.get("/api/v1/notifications")).json() == {"items": [], "unread": 0}


async def test_socket_without_session_or_from_another_site_is_refused(desk: Desk) -> None:
    async with websockets.connect(desk.ws_url) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "sign in first")
    signed_in, cookie = await desk.client("alice")
    await signed_in.aclose()
    async with websockets.connect(
        desk.ws_url,
        additional_headers={"Cookie": cookie},
        origin="http://evil.example",  # type: ignore[arg-type]
    ) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    async with websockets.connect(
        desk.ws_url, additional_headers={"Cookie": "callbridge_session=forged"}
    ) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_binary_or_oversized_frames_close_the_tab_with_a_code(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    client, cookie = await desk.client("alice")
    await client.aclose()
    for frame, code in ((b"\x00binary", 1003), ("x" * (MAX_CLIENT_FRAME + 1), 1009)):
        async with websockets.connect(desk.ws_url, additional_headers={"Cookie": cookie}) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "hello"
            await ws.send("ping")
            assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}
            await ws.send(frame)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None, "dropped without a close frame"
        assert closed.value.rcvd.code == code and closed.value.rcvd.reason
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert desk.app is not None and sockets_of(desk.app).count == 0


async def test_click_to_call_rings_the_phone_then_the_number(desk: Desk, tab: Any) -> None:
    alice = await tab("alice")
    client, _ = await desk.client("alice")
    async with closing(client):
        placed = await client.post("/api/v1/calls/originate", json={"number": "(415) 555-0100"})
        assert placed.status_code == 200, placed.text
        assert placed.json()["extension"] == "1001" and placed.json()["number"] == ADA
        first = await alice.wait_for(lambda m: m["type"] == "dial")
        assert first["state"] == "ringing_phone"
        done = await alice.wait_for(lambda m: m["type"] == "dial" and m["state"] != "ringing_phone")
        assert done["state"] == "dialing" and "1001 answered" in done["message"]
        originate = [a for a in desk.sim.actions if a.get("Action") == "Originate"]
        assert originate[-1].get("Channel") == "PJSIP/1001" and originate[-1].get("Exten") == ADA


@pytest.mark.parametrize(
    ("phone", "message"),
    [
        ("busy", "your phone 1001 is busy"),
        ("noanswer", "your phone 1001 did not answer"),
        ("unregistered", "your phone 1001 is not registered or cannot be reached"),
    ],
)
async def test_click_to_call_failure_is_a_4xx_with_the_reason(
    desk: Desk, tab: Any, phone: str, message: str
) -> None:
    desk.sim.phones["1001"] = phone
    alice = await tab("alice")
    client, _ = await desk.client("alice")
    async with closing(client):
        answer = await client.post("/api/v1/calls/originate", json={"number": ADA})
    assert answer.status_code == 422
    assert answer.json()["error"] == {"code": "pbx_rejected", "message": message}
    failed = await alice.wait_for(lambda m: m["type"] == "dial" and m["state"] == "failed")
    assert message in failed["message"]


async def test_click_to_call_refuses_bad_requests(desk: Desk) -> None:
    dave, _ = await desk.client("dave")  # no extension
    async with closing(dave):
        answer = await dave.post("/api/v1/calls/originate", json={"number": ADA})
        assert answer.status_code == 400
        assert "no phone extension" in answer.json()["error"]["message"]
    alice, _ = await desk.client("alice")
    async with closing(alice):
        bad = await alice.post("/api/v1/calls/originate", json={"number": "call me maybe"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_number"
        empty = await alice.post("/api/v1/calls/originate", json={})
        assert empty.status_code == 422
        no_csrf = await alice.post(
            "/api/v1/calls/originate", json={"number": ADA}, headers={"x-csrf-token": "wrong"}
        )
        assert no_csrf.status_code == 403
    async with httpx.AsyncClient(base_url=desk.url) as nobody:
        anonymous = await nobody.post("/api/v1/calls/originate", json={"number": ADA})
        assert anonymous.status_code == 401
        spec = (await nobody.get("/api/v1/openapi.json")).json()
    assert spec["paths"]["/api/v1/calls/originate"]["post"]["operationId"] == "originate_call"


async def test_hang_up_from_the_card_and_only_your_own(desk: Desk, tab: Any) -> None:
    alice = await tab("alice")
    call = await desk.sim.start_call("inbound", caller=ADA, extension="1001")
    card = (await alice.wait_for(lambda m: m["type"] == "card" and m["card"]["state"] == "talking"))["card"]
    bob, _ = await desk.client("bob")
    async with closing(bob):
        # Bob's answer for Alice's call is the answer for a call that does not exist.
        refused = await bob.post(f"/api/v1/calls/{card['id']}/hangup")
        missing = await bob.post("/api/v1/calls/999999/hangup")
        assert refused.status_code == missing.status_code == 404
        assert refused.json()["error"]["code"] == "not_found"
        assert refused.json()["error"]["message"] == f"no call with id {card['id']}"
        assert missing.json()["error"]["message"] == "no call with id 999999"
    client, _ = await desk.client("alice")
    async with closing(client):
        done = await client.post(f"/api/v1/calls/{card['id']}/hangup")
        assert done.status_code == 204, done.text
    ended = await alice.wait_for(lambda m: m["type"] == "card" and m["card"]["state"] == "ended")
    assert ended["card"]["id"] == card["id"]
    assert call.linkedid not in desk.sim.calls


async def test_presence_and_live_calls_for_managers(desk: Desk, tab: Any) -> None:
    carol, bob = await tab("carol"), await tab("bob")
    call = await desk.sim.start_call("inbound", caller=ADA, extension="1002")
    on_call = await carol.wait_for(
        lambda m: m["type"] == "presence" and m["extension"] == "1002" and m["presence"] == "on_call"
    )
    assert on_call["pbx"] == "office"
    live = await carol.wait_for(lambda m: m["type"] == "live_call" and m["call"]["answered_at"])
    assert live["call"]["external_number"] == ADA
    client, _ = await desk.client("carol")
    async with closing(client):
        rows = (await client.get("/api/v1/calls/live")).json()
        assert [r["id"] for r in rows] == [live["call"]["id"]]
        presence = {p["extension"]: p for p in (await client.get("/api/v1/presence")).json()}
        assert presence["1002"]["presence"] == "on_call" and presence["1002"]["user"] == "bob"
        assert presence["1001"]["presence"] == "unknown"
        page = await client.get("/desk/calls", headers={"accept": "text/html"})
        assert page.status_code == 200 and 'data-number="+14155550100"' in page.text
    await call.hangup("caller")
    await carol.wait_for(lambda m: m["type"] == "live_call" and m["call"]["complete"])
    await carol.wait_for(
        lambda m: m["type"] == "presence" and m["extension"] == "1002" and m["presence"] == "available"
    )
    assert not any(m["type"] == "live_call" for m in bob.messages)
    agent, _ = await desk.client("bob")
    async with closing(agent):
        assert (await agent.get("/api/v1/calls/live")).status_code == 403


async def test_dial_filter_renders_click_to_call_links(desk: Desk) -> None:
    client, _ = await desk.client("alice")
    async with closing(client):
        page = await client.get("/desk", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert 'id="pops"' in page.text and 'aria-live="assertive"' in page.text
    assert "/static/live.js" in page.text


async def test_a_colleague_calling_pops_as_the_colleague_not_a_stranger(desk: Desk, tab: Any) -> None:
    alice = await tab("alice")
    call = await desk.sim.start_call("internal", extension="1002", number="1001", ring=0.2)
    card = (await alice.wait_for(lambda m: m["type"] == "card"))["card"]
    assert card["direction"] == "internal"
    assert card["colleague"] == {"name": "bob", "extension": "1002"}
    assert card["caller"] == "bob (ext 1002)"
    assert card["contact"] is None
    await call.hangup("caller")
    # An outside caller has no colleague.
    await desk.sim.place_call("inbound_answered", caller=ADA, extension="1001")
    outside = (await alice.wait_for(lambda m: m["type"] == "card" and m["card"]["number"] == ADA))["card"]
    assert outside["colleague"] is None


async def test_the_dial_box_takes_our_extensions_and_valid_numbers_only(desk: Desk, tab: Any) -> None:
    await tab("alice")
    client, _ = await desk.client("alice")
    async with closing(client):
        colleague = await client.post("/api/v1/calls/originate", json={"number": "1002"})
        assert colleague.status_code == 200, colleague.text
        assert colleague.json()["number"] == "1002"
        for junk in ("12", "5555", "555 0100", "+1 555 123 0000"):
            answer = await client.post("/api/v1/calls/originate", json={"number": junk})
            assert answer.status_code == 400, (junk, answer.text)
            assert answer.json()["error"]["code"] == "invalid_number", junk
        short = await client.post("/api/v1/calls/originate", json={"number": "12"})
        assert "neither an extension of this hub nor a phone number" in short.json()["error"]["message"]
    originates = [a.get("Exten") for a in desk.sim.actions if a.get("Action") == "Originate"]
    assert originates == ["1002"]


async def test_a_live_call_keeps_its_contact_name_once_answered(desk: Desk, tab: Any) -> None:
    carol = await tab("carol")
    call = await desk.sim.start_call("inbound", caller=ADA, extension="1002", ring=0.2)
    live = await carol.wait_for(lambda m: m["type"] == "live_call" and m["call"]["answered_at"])
    assert live["call"]["contact_name"] == "Ada Lovelace"
    assert live["call"]["company_name"] == "Analytical Engines"
    await call.hangup("caller")


async def test_call_alerts_are_off_until_the_user_turns_them_on(desk: Desk, tab: Any) -> None:
    first = await tab("dave")  # an agent who owns nothing and has no extension
    assert first.messages[0]["alerts"] == {"ring_sound": False, "desktop_notifications": False}
    assert first.messages[0]["now"]
    client, _ = await desk.client("dave")
    async with closing(client):
        assert (await client.get("/api/v1/me/alerts")).json() == {
            "ring_sound": False,
            "desktop_notifications": False,
        }
        put = await client.put("/api/v1/me/alerts", json={"ring_sound": True, "desktop_notifications": False})
        assert put.status_code == 200 and put.json()["ring_sound"] is True
        bad = await client.put("/api/v1/me/alerts", json={"ring_sound": "loud", "desktop_notifications": 1})
        assert bad.status_code == 422 and set(bad.json()["error"]) >= {"code", "message"}
        page = await client.get("/account", headers={"accept": "text/html"})
        assert (
            'id="alert-ring" checked' in page.text
            and 'id="alert-desktop" data-notify-permission >' in page.text
        )
        form = await client.post(
            "/account/alerts",
            data={"csrf_token": client.headers["x-csrf-token"], "desktop_notifications": "on"},
        )
        assert form.status_code == 303
    again = await tab("dave")
    assert again.messages[0]["alerts"] == {"ring_sound": False, "desktop_notifications": True}
    other = await tab("alice")  # one user's choice is theirs only
    assert other.messages[0]["alerts"] == {"ring_sound": False, "desktop_notifications": False}
