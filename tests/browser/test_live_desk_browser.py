"""The live desk in a real Chromium against real hub processes fed by the AMI simulator.

The simulator runs in this test process (on its own event loop in a thread), the hub connects
to it like to any Asterisk, and each user signs in in their own browser context.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from tests.browser.conftest import ARTIFACTS, LiveHub, start_hub, stop_hub

from callbridge.config import Settings
from callbridge.domain.directory import ContactKind, Phone
from callbridge.domain.pbx import PbxKind
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.pbx.asterisk.simulator import AmiSimulator
from callbridge.services.directory import ContactInput
from callbridge.services.pbxes import AsteriskSettings, add_pbx

pytestmark = pytest.mark.browser

T = TypeVar("T")
SECRET = "ami-secret-for-browser-tests"
PASSWORD = "user-password-1"
ADA = "+14155550100"
REDIS_URL = os.environ.get("CALLBRIDGE_TEST_REDIS_URL", "")


class SimThread:
    """The AMI simulator on its own loop, driven from the (synchronous) browser tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sim = AmiSimulator(username="hub", secret=SECRET, auth_failure_delay=0.05, cel=True)
        self.run(self.sim.start())

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        self.run(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


async def _seed(data_dir: Path, sim_port: int, redis_url: str = "") -> None:
    hub = Hub.build(Settings(data_dir=data_dir, redis_url=redis_url))
    try:
        await hub.prepare()
        async with hub.db.unit() as repos:
            accounts = hub.accounts(repos)
            ids = {}
            for name, role in (("alice", Role.AGENT), ("bob", Role.AGENT), ("carol", Role.MANAGER)):
                user, _ = await accounts.create_user(name, role, PASSWORD, name.capitalize())
                ids[name] = user.id
            await add_pbx(
                repos.pbxes,
                "office",
                PbxKind.ASTERISK,
                AsteriskSettings(
                    host="127.0.0.1", port=sim_port, username="hub", secret=SECRET, trunks=("trunk*",)
                ),
            )
            for name, ext in (("alice", "1001"), ("bob", "1002"), ("carol", "1003")):
                await repos.extensions.map("office", ext, ids[name])
            company = await repos.directory.create(
                ContactInput(kind=ContactKind.COMPANY, name="Analytical Engines")
            )
            await repos.directory.create(
                ContactInput(
                    kind=ContactKind.PERSON,
                    name="Ada Lovelace",
                    company_id=company,
                    phones=(Phone("(415) 555-0100", ADA),),
                    tags=("VIP", "Engines"),
                    owner_id=ids["alice"],
                )
            )
    finally:
        await hub.close()


def _wait_for_login(sim: SimThread, logins: int = 1) -> None:
    for _ in range(200):
        if sim.sim.logins >= logins:
            return
        threading.Event().wait(0.05)
    raise AssertionError("the hub never logged in to the AMI simulator")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    s = SimThread()
    yield s
    s.close()


@pytest.fixture(scope="module")
def desk_hub(tmp_path_factory: pytest.TempPathFactory, sim: SimThread) -> Iterator[LiveHub]:
    data_dir = tmp_path_factory.mktemp("desk")
    sim.run(_seed(data_dir, sim.sim.port), 60)
    hub = start_hub(data_dir)
    _wait_for_login(sim)
    yield hub
    stop_hub(hub)


@pytest.fixture(autouse=True)
def phones_answer(sim: SimThread) -> Iterator[None]:
    sim.sim.phones.clear()
    yield
    # A test that failed half-way leaves no call behind for the next one to see.
    for call in list(sim.sim.calls.values()):
        sim.run(call.hangup())


def sign_in(browser: Browser, url: str, name: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.goto(url + "/login?next=/desk")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(url + "/desk")
    expect(page.locator("#live-state")).to_have_text("live")
    return context, page


def test_pop_on_the_right_users_tabs_follows_the_call(
    browser: Browser, desk_hub: LiveHub, sim: SimThread
) -> None:
    alice_ctx, alice = sign_in(browser, desk_hub.url, "alice")
    alice2 = alice_ctx.new_page()
    alice2.goto(desk_hub.url + "/calls")
    expect(alice2.locator("#live-state")).to_have_text("live")
    bob_ctx, bob = sign_in(browser, desk_hub.url, "bob")
    call_future = sim.submit(
        sim.sim.start_call("inbound", caller=ADA, caller_name="", extension="1001", ring=5)
    )
    for page in (alice, alice2):
        pop = page.locator("#pops .pop")
        expect(pop).to_have_count(1)
        expect(pop.get_by_role("heading", name="Ada Lovelace")).to_be_visible()
        expect(pop).to_have_attribute("data-state", "ringing")
        expect(pop).to_contain_text("Analytical Engines")
        expect(pop).to_contain_text("VIP")
        expect(pop).to_contain_text("Owner: Alice")
        expect(pop.get_by_role("link", name="Open contact")).to_be_visible()
        expect(pop.get_by_role("button", name="Hang up")).to_be_visible()
        expect(pop.get_by_role("button", name="Answer")).to_have_count(0)  # Asterisk: no answer API
    ARTIFACTS.mkdir(exist_ok=True)
    alice.screenshot(path=str(ARTIFACTS / "screen-pop-ringing.png"))
    # The presence panel shows 1001 ringing, on everyone's desk.
    expect(bob.locator('tr[data-presence="office/1001"] [data-state]')).to_have_text(
        re.compile("ringing|on call")
    )
    # A keyboard user on "Hang up" keeps the focus there while the card moves on to talking.
    alice.locator("#pops .pop").get_by_role("button", name="Hang up").focus()
    call = call_future.result(10)
    expect(alice.locator("#pops .pop")).to_have_attribute("data-state", "talking")
    expect(alice.locator("#pops .pop")).to_contain_text("On the call")
    expect(alice.locator("#pops .pop").get_by_role("button", name="Hang up")).to_be_focused()
    expect(bob.locator('tr[data-presence="office/1001"] [data-state]')).to_have_text("on call")
    alice.screenshot(path=str(ARTIFACTS / "screen-pop-talking.png"))
    threading.Event().wait(1.2)
    sim.run(call.hangup("caller"))
    expect(alice.locator("#pops .pop")).to_have_attribute("data-state", "ended")
    expect(alice.locator("#pops .pop")).to_contain_text(re.compile(r"talked 0:0[1-9]"))
    expect(alice.locator("#pops .pop")).to_have_count(0, timeout=15000)  # goes away on its own
    expect(bob.locator('tr[data-presence="office/1001"] [data-state]')).to_have_text("available")
    assert bob.locator("#pops .pop").count() == 0
    alice_ctx.close()
    bob_ctx.close()


def test_missed_call_leaves_a_notification(browser: Browser, desk_hub: LiveHub, sim: SimThread) -> None:
    ctx, alice = sign_in(browser, desk_hub.url, "alice")
    before = int(alice.locator("#bell [data-unread]").inner_text())
    sim.run(sim.sim.place_call("inbound_missed", caller=ADA, caller_name="", extension="1001", ring=0.5))
    expect(alice.locator("#pops .pop")).to_contain_text("Missed call")
    expect(alice.locator("#bell [data-unread]")).to_have_text(str(before + 1))
    alice.reload()
    expect(alice.locator("#bell [data-unread]")).to_have_text(str(before + 1))
    note = alice.locator("#notes-list .note.unread").first
    expect(note).to_contain_text("Missed call from Ada Lovelace")
    note.get_by_role("link", name="Missed call from Ada Lovelace").click()
    expect(alice).to_have_url(re.compile(r"/contacts/\d+$"))
    expect(alice.locator("#bell [data-unread]")).to_have_text(str(before))
    ctx.close()


def test_click_on_a_number_calls_and_shows_progress(
    browser: Browser, desk_hub: LiveHub, sim: SimThread
) -> None:
    ctx, alice = sign_in(browser, desk_hub.url, "alice")
    alice.goto(desk_hub.url + "/contacts")
    link = alice.locator(f'a.dial[data-number="{ADA}"]').first
    expect(link).to_be_visible()
    link.click()
    status = alice.locator("#dial-status")
    expect(status).to_contain_text(f"Your phone 1001 answered; now calling {ADA}")
    alice.screenshot(path=str(ARTIFACTS / "click-to-call.png"))
    originates = [a for a in sim.sim.actions if a.get("Action") == "Originate"]
    assert originates and originates[-1].get("Channel") == "PJSIP/1001" and originates[-1].get("Exten") == ADA
    # The click-to-call pops on Alice's desk as her outgoing call.
    expect(alice.locator("#pops .pop")).to_contain_text("Outgoing call")
    for linkedid, call in list(sim.sim.calls.items()):
        if linkedid.startswith("cb-"):
            sim.run(call.hangup("caller"))
    ctx.close()


def test_click_to_call_failure_shows_the_reason(browser: Browser, desk_hub: LiveHub, sim: SimThread) -> None:
    sim.sim.phones["1001"] = "busy"
    ctx, alice = sign_in(browser, desk_hub.url, "alice")
    alice.get_by_label("Number", exact=True).fill("+1 415 555 0100")
    alice.get_by_role("button", name="Call", exact=True).click()
    status = alice.locator("#dial-status")
    expect(status).to_contain_text("your phone 1001 is busy")
    expect(status).to_have_attribute("data-state", "failed")
    ctx.close()


def test_narrow_window_keeps_the_pop_readable(browser: Browser, desk_hub: LiveHub, sim: SimThread) -> None:
    ctx, alice = sign_in(browser, desk_hub.url, "alice")
    alice.set_viewport_size({"width": 380, "height": 740})
    call = sim.run(sim.sim.start_call("inbound", caller="+12025550199", caller_name="", extension="1001"))
    pop = alice.locator("#pops .pop")
    expect(pop).to_contain_text("Unknown caller")
    expect(pop.get_by_role("link", name="Create contact")).to_have_attribute(
        "href", re.compile(r"/contacts/new\?number=%2B12025550199")
    )
    box = pop.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 380
    alice.screenshot(path=str(ARTIFACTS / "screen-pop-narrow.png"))
    # Keyboard: the hang-up button is reachable and works.
    pop.get_by_role("button", name="Hang up").focus()
    alice.keyboard.press("Enter")
    expect(pop).to_have_attribute("data-state", "ended")
    assert call.linkedid not in sim.sim.calls
    ctx.close()


def test_live_calls_page_for_managers(browser: Browser, desk_hub: LiveHub, sim: SimThread) -> None:
    ctx, carol = sign_in(browser, desk_hub.url, "carol")
    carol.goto(desk_hub.url + "/desk/calls")
    expect(carol.locator("#live-state")).to_have_text("live")
    call = sim.run(sim.sim.start_call("inbound", caller=ADA, caller_name="", extension="1002"))
    row = carol.locator("#live-calls tr[data-live-call]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(ADA)
    expect(row.locator("[data-state]")).to_have_text("talking")
    sim.run(call.hangup("callee"))
    expect(row).to_have_count(0)
    ctx.close()


def _chanspy_originates(sim: SimThread) -> list[tuple[str, str]]:
    """(Channel, Data) of each Originate of ChanSpy the simulator received."""
    return [
        (m.get("Channel"), m.get("Data"))
        for m in list(sim.sim.actions)
        if m.get("Action") == "Originate" and m.get("Application") == "ChanSpy"
    ]


def test_a_manager_listens_whispers_from_a_live_calls_row(
    browser: Browser, desk_hub: LiveHub, sim: SimThread
) -> None:
    """Each live row offers listen / whisper / barge to a manager: a row added live (WebSocket)
    and one the page was rendered with; a click rings the manager's phone (1003) into ChanSpy
    on the agent's channel."""
    ctx, carol = sign_in(browser, desk_hub.url, "carol")
    carol.goto(desk_hub.url + "/desk/calls")
    expect(carol.locator("#live-state")).to_have_text("live")
    before = len(_chanspy_originates(sim))
    spies = len(sim.sim.spies)
    call = sim.run(sim.sim.start_call("inbound", caller=ADA, caller_name="", extension="1002"))
    agent_channel = call.channels[1].name
    row = carol.locator("#live-calls tr[data-live-call]")
    expect(row).to_have_count(1)
    expect(row.locator("[data-state]")).to_have_text("talking")
    row.get_by_role("button", name="Listen").click()
    expect(row.locator("[data-spy-status]")).to_have_text("answer your phone to listen")
    assert _chanspy_originates(sim)[before:] == [("PJSIP/1003", f"{agent_channel},q")]
    assert sim.sim.spies[spies:] == [{"supervisor": "PJSIP/1003", "channel": agent_channel, "options": "q"}]

    carol.reload()  # the row as the page renders it
    expect(carol.locator("#live-state")).to_have_text("live")
    expect(row).to_have_count(1)
    expect(row.get_by_role("button", name="Barge")).to_be_visible()
    row.get_by_role("button", name="Whisper").click()
    expect(row.locator("[data-spy-status]")).to_have_text("answer your phone to whisper")
    assert _chanspy_originates(sim)[before:] == [
        ("PJSIP/1003", f"{agent_channel},q"),
        ("PJSIP/1003", f"{agent_channel},qw"),
    ]
    sim.run(call.hangup("callee"))
    expect(row).to_have_count(0)
    ctx.close()


def test_an_agent_is_offered_no_way_to_join_a_call(
    browser: Browser, desk_hub: LiveHub, sim: SimThread
) -> None:
    ctx, bob = sign_in(browser, desk_hub.url, "bob")  # owns no contact
    call = sim.run(sim.sim.start_call("inbound", caller="+14155550177", caller_name="", extension="1002"))
    expect(bob.locator("#pops .pop")).to_have_count(1)
    expect(bob.locator("button[data-spy]")).to_have_count(0)
    answer = bob.goto(desk_hub.url + "/desk/calls")
    assert answer is not None and answer.status == 403
    expect(bob.locator("#live-calls")).to_have_count(0)
    expect(bob.locator("button[data-spy]")).to_have_count(0)
    bob.goto(desk_hub.url + "/calls")
    bob.locator("td[data-label='When'] a").first.click()
    expect(bob).to_have_url(re.compile(r"/calls/\d+$"))
    expect(bob.locator("button[data-spy]")).to_have_count(0)
    before = len(_chanspy_originates(sim))
    sim.run(call.hangup("callee"))
    assert len(_chanspy_originates(sim)) == before
    ctx.close()


@pytest.mark.redis
@pytest.mark.skipif(not REDIS_URL, reason="needs the throwaway Redis that make test starts")
def test_two_workers_with_redis_deliver_the_pop(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sim = SimThread()
    data_dir = tmp_path_factory.mktemp("two-workers")
    # A fresh Redis database per run, so no lease or board of another test lingers.
    env = {"CALLBRIDGE_REDIS_URL": REDIS_URL, "CALLBRIDGE_LINK_LEASE_SECONDS": "3"}
    sim.run(_seed(data_dir, sim.sim.port, REDIS_URL), 60)
    first = start_hub(data_dir, env)
    second = start_hub(data_dir, env)
    try:
        _wait_for_login(sim)
        threading.Event().wait(2.5)  # a full lease round: the other worker must not log in too
        assert sim.sim.logins == 1 and sim.sim.sessions == 1
        ctx_a, on_first = sign_in(browser, first.url, "alice")
        # Cookies ignore the port and both workers share the data dir's key: one sign-in.
        on_second = ctx_a.new_page()
        on_second.goto(second.url + "/desk")
        expect(on_second.locator("#live-state")).to_have_text("live")
        sim.run(sim.sim.place_call("inbound_missed", caller=ADA, caller_name="", extension="1001", ring=1.5))
        for page in (on_first, on_second):
            expect(page.locator("#pops .pop")).to_contain_text("Ada Lovelace")
            expect(page.locator("#bell [data-unread]")).to_have_text("1")
        on_second.screenshot(path=str(ARTIFACTS / "screen-pop-two-workers.png"))
        # Click-to-call from either worker reaches the one link.
        for page in (on_first, on_second):
            page.get_by_label("Number", exact=True).fill(ADA)
            page.get_by_role("button", name="Call", exact=True).click()
            expect(page.locator("#dial-status")).to_contain_text("now calling")
        assert len([a for a in sim.sim.actions if a.get("Action") == "Originate"]) == 2
        ctx_a.close()
    finally:
        stop_hub(first)
        stop_hub(second)
        sim.close()


def _stored_recording(hub: LiveHub, seconds: int = 6) -> int:
    """Give Ada's latest ended call a stored recording (a tone WAV); returns the recording's id."""
    import hashlib
    import math
    import struct
    import wave
    from datetime import UTC, datetime

    from sqlalchemy import create_engine, insert, select

    from callbridge.store.calls import calls
    from callbridge.store.recordings import recordings

    engine = create_engine(f"sqlite:///{hub.data_dir / 'callbridge.db'}")
    try:
        with engine.begin() as conn:
            call_id = conn.execute(
                select(calls.c.id)
                .where(calls.c.from_number == ADA, calls.c.disposition.is_not(None))
                .order_by(calls.c.started_at.desc())
                .limit(1)
            ).scalar_one()
            now = datetime.now(UTC)
            key = f"office/{now:%Y/%m}/desk-{call_id}.wav"
            file = hub.data_dir / "recordings" / key
            file.parent.mkdir(parents=True, exist_ok=True)
            with wave.open(str(file), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(8000)
                w.writeframes(
                    b"".join(
                        struct.pack("<h", int(8000 * math.sin(i * 2 * math.pi * 440 / 8000)))
                        for i in range(8000 * seconds)
                    )
                )
            return int(
                conn.execute(
                    insert(recordings)
                    .values(
                        call_id=call_id,
                        pbx="office",
                        reference=f"desk-{call_id}.wav",
                        status="ready",
                        storage_key=key,
                        size_bytes=file.stat().st_size,
                        duration_seconds=float(seconds),
                        content_type="audio/wav",
                        sha256=hashlib.sha256(file.read_bytes()).hexdigest(),
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(recordings.c.id)
                ).scalar_one()
            )
    finally:
        engine.dispose()


POP_AUDIO = "document.querySelector('#pops audio.pop-audio')"


def test_the_pops_last_calls_play_a_stored_recording(
    browser: Browser, desk_hub: LiveHub, sim: SimThread
) -> None:
    ctx, alice = sign_in(browser, desk_hub.url, "alice")
    # Ada called before (Alice answered); the hub stored that call's recording.
    earlier = sim.submit(
        sim.sim.start_call("inbound", caller=ADA, caller_name="", extension="1001", ring=0.2)
    )
    call = earlier.result(10)
    threading.Event().wait(1.1)
    sim.run(call.hangup("caller"))
    expect(alice.locator("#pops .pop")).to_have_count(0, timeout=15000)
    recording_id = _stored_recording(desk_hub)

    # She calls again: the pop's "Last calls" has a player for the recorded call.
    ringing = sim.submit(sim.sim.start_call("inbound", caller=ADA, caller_name="", extension="1001", ring=4))
    pop = alice.locator("#pops .pop")
    expect(pop).to_have_attribute("data-state", "ringing")
    recent = pop.locator("details.pop-recent")
    if recent.get_attribute("open") is None:
        recent.locator("summary").click()
    player = recent.locator("audio.pop-audio")
    expect(player).to_have_count(1)
    expect(player).to_have_attribute("src", f"/api/v1/recordings/{recording_id}/audio")
    pop.get_by_role("heading").click()  # the page has the user's attention: it may play sound
    player.evaluate("a => a.play()")
    alice.wait_for_function(
        f"() => {{ const a = {POP_AUDIO}; return a && a.currentTime > 0.3; }}",
        timeout=15000,
    )
    # The call is answered: the card is renewed, the recording plays on (the same element).
    answered = ringing.result(15)
    expect(pop).to_have_attribute("data-state", "talking")
    at = player.evaluate("a => a.currentTime")
    alice.wait_for_function(
        f"(t) => {{ const a = {POP_AUDIO}; return !a.paused && a.currentTime > t + 0.3; }}",
        arg=at,
        timeout=15000,
    )
    sim.run(answered.hangup("caller"))
    ctx.close()
