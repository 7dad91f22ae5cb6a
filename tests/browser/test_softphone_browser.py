"""The softphone in a real Chromium (fake microphone) against a real SIP server (Kamailio on
loopback, SIP over WebSocket) and a real hub process: registration, calls with media both ways,
hold, mute, DTMF, call waiting, errors in words, and one registration per user across tabs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect
from tests.browser.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, LiveHub, start_hub, stop_hub
from tests.browser.kamailio import Kamailio, available

from callbridge.config import Settings
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.store.softphones import IceServer

pytestmark = pytest.mark.browser

PASSWORD = "user-password-1"
# Alice's STUN and TURN servers answer nothing: they only have to reach the peer connection.
ALICE_ICE = [
    IceServer(("stun:127.0.0.1:9",)),
    IceServer(("turn:127.0.0.1:9?transport=udp",), "alice-turn", "turn-secret"),
]


async def _seed(data_dir: Path, ws_url: str) -> None:
    hub = Hub.build(Settings(data_dir=data_dir))
    try:
        await hub.prepare()
        async with hub.db.unit() as repos:
            accounts = hub.accounts(repos)
            for name in ("alice", "bob", "carol", "dave", "erin", "frank", "gina"):
                user, _ = await accounts.create_user(name, Role.AGENT, PASSWORD, name.capitalize())
                if name == "erin":
                    continue  # an agent with no softphone
                await repos.softphones.put(
                    user.id,
                    enabled=True,
                    ws_url=ws_url,
                    # frank's SIP user is his extension, as on a PBX
                    sip_uri="sip:1006@127.0.0.1" if name == "frank" else f"sip:{name}@127.0.0.1",
                    auth_user="1006" if name == "frank" else name,
                    ice_servers=ALICE_ICE if name == "alice" else [],
                    # dave's secret is wrong: Kamailio refuses his registration.
                    secret={"dave": "wrong", "frank": "pw-1006"}.get(name, f"pw-{name}"),
                )
    finally:
        await hub.close()


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    if not available():
        pytest.fail("kamailio is not installed; make test installs kamailio and kamailio-websocket-modules")
    server = Kamailio(tmp_path_factory.mktemp("kamailio"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def phone_hub(tmp_path_factory: pytest.TempPathFactory, kamailio: Kamailio) -> Iterator[LiveHub]:
    data_dir = tmp_path_factory.mktemp("softphone")
    # Its own thread: sync Playwright may already run an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _seed(data_dir, kamailio.ws_url)).result(60)
    hub = start_hub(data_dir)
    yield hub
    stop_hub(hub)


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
    ]
    b = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
    yield b
    b.close()


def sign_in(browser: Browser, url: str, name: str, microphone: bool = True) -> tuple[BrowserContext, Page]:
    context = browser.new_context(
        viewport={"width": 1200, "height": 900}, permissions=["microphone"] if microphone else []
    )
    page = context.new_page()
    page.goto(url + "/login?next=/desk")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(url + "/desk")
    return context, page


def phone(page: Page) -> Any:
    return page.locator("#softphone")


def registered(page: Page) -> None:
    expect(phone(page)).to_have_attribute("data-softphone-state", "registered", timeout=10000)


def dial(page: Page, number: str) -> None:
    page.locator("#sp-number").fill(number)
    page.locator("[data-sp-dial] button").click()


def inbound_audio_bytes(page: Page) -> list[int]:
    """bytesReceived of every inbound audio stream of the owner tab's peer connections."""
    return list(
        page.evaluate(
            """async () => {
              const out = [];
              for (const pc of window.callbridgeSoftphone.peers.values()) {
                const stats = await pc.getStats();
                stats.forEach((s) => {
                  if (s.type === "inbound-rtp" && s.kind === "audio") out.push(s.bytesReceived);
                });
              }
              return out;
            }"""
        )
    )


def audio_grows(page: Page) -> None:
    deadline = time.monotonic() + 10
    first: list[int] = []
    while time.monotonic() < deadline:
        first = inbound_audio_bytes(page)
        if first and first[0] > 0:
            break
        page.wait_for_timeout(200)
    assert first and first[0] > 0, f"no inbound audio: {first}"
    page.wait_for_timeout(1000)
    later = inbound_audio_bytes(page)
    assert later[0] > first[0], f"inbound audio does not grow: {first} -> {later}"


def test_two_users_call_with_audio_hold_mute_dtmf_and_call_waiting(
    browser: Browser, phone_hub: LiveHub, kamailio: Kamailio
) -> None:
    alice_ctx, alice = sign_in(browser, phone_hub.url, "alice")
    bob_ctx, bob = sign_in(browser, phone_hub.url, "bob")
    carol_ctx, carol = sign_in(browser, phone_hub.url, "carol")
    try:
        for page in (alice, bob, carol):
            registered(page)
        assert len(kamailio.contacts("alice")) == 1
        assert len(kamailio.contacts("bob")) == 1

        dial(alice, "bob")
        expect(phone(alice)).to_have_attribute("data-softphone-state", "in_call")
        expect(phone(bob)).to_have_attribute("data-softphone-state", "ringing")
        # The screen pop is the softphone's card: the caller and an Answer button.
        card = bob.locator("#pop-list .pop[data-softphone-card]")
        expect(card).to_have_count(1)
        expect(card.locator(".pop-caller")).to_have_text("alice")
        card.get_by_role("button", name="Answer").click()
        expect(phone(bob)).to_have_attribute("data-softphone-state", "in_call")
        expect(bob.locator("#pop-list .pop[data-softphone-card]")).to_have_count(0)
        expect(alice.locator("[data-sp-call-state='in_call']")).to_have_count(1)

        # Media both ways, and alice's STUN/TURN servers reached her peer connection.
        audio_grows(alice)
        audio_grows(bob)
        ice = alice.evaluate(
            "() => [...window.callbridgeSoftphone.peers.values()][0].getConfiguration().iceServers"
        )
        assert ice == [
            {"urls": ["stun:127.0.0.1:9"], "username": "", "credential": ""},
            {
                "urls": ["turn:127.0.0.1:9?transport=udp"],
                "username": "alice-turn",
                "credential": "turn-secret",
            },
        ]

        ARTIFACTS.mkdir(exist_ok=True)
        phone(bob).screenshot(path=str(ARTIFACTS / "softphone-in-call.png"))

        # DTMF: alice's keys arrive at bob.
        for key in ("5", "#"):
            alice.locator(f"[data-sp-dtmf='{key}']").click()
        expect(bob.locator("[data-sp-dtmf-received]")).to_have_text("Keys from the other side: 5#")

        # Mute and hold.
        alice.locator("[data-sp-mute]").click()
        expect(alice.locator("[data-sp-mute]")).to_have_text("Unmute")
        alice.locator("[data-sp-mute]").click()
        expect(alice.locator("[data-sp-mute]")).to_have_text("Mute")
        alice.locator("[data-sp-hold]").click()
        expect(phone(alice)).to_have_attribute("data-softphone-state", "on_hold")
        alice.locator("[data-sp-resume]").click()
        expect(phone(alice)).to_have_attribute("data-softphone-state", "in_call")

        # Call waiting: carol calls bob during the call; bob answers her (alice goes on hold),
        # then switches back to alice.
        dial(carol, "bob")
        waiting = bob.locator("#softphone [data-sp-call-state='ringing']")
        expect(waiting).to_have_count(1)
        expect(phone(bob)).to_have_attribute("data-softphone-state", "in_call")
        expect(bob.locator("#pop-list [data-sp-answer]")).to_have_count(1)
        waiting.get_by_role("button", name="Answer").click()
        expect(bob.locator("#softphone [data-sp-call-state='on_hold']")).to_have_count(1)
        expect(bob.locator("#softphone [data-sp-call-state='in_call']")).to_have_count(1)
        expect(phone(carol)).to_have_attribute("data-softphone-state", "in_call")
        audio_grows(carol)
        bob.get_by_role("button", name="Switch to this call").click()
        expect(bob.locator("#softphone .sp-active")).to_contain_text("alice")
        expect(bob.locator("#softphone .sp-active")).to_have_attribute("data-sp-call-state", "in_call")

        # Carol hangs up; bob hangs up alice; everyone is back to registered.
        carol.locator("[data-sp-hangup]").click()
        bob.locator("#softphone .sp-active [data-sp-hangup]").click()
        for page in (alice, bob, carol):
            registered(page)
        # The SIP secrets never reach the hub's log.
        log = (phone_hub.data_dir / "hub.log").read_text()
        assert "pw-alice" not in log and "pw-bob" not in log
    finally:
        for ctx in (alice_ctx, bob_ctx, carol_ctx):
            ctx.close()


def test_far_end_refusals_and_registration_errors_read_as_sentences(
    browser: Browser, phone_hub: LiveHub, kamailio: Kamailio
) -> None:
    alice_ctx, alice = sign_in(browser, phone_hub.url, "alice")
    bob_ctx, bob = sign_in(browser, phone_hub.url, "bob")
    dave_ctx, dave = sign_in(browser, phone_hub.url, "dave")
    erin_ctx, erin = sign_in(browser, phone_hub.url, "erin")
    try:
        registered(alice)
        registered(bob)
        # A wrong secret: refused, with the PBX's reason, and no retry storm.
        expect(phone(dave)).to_have_attribute("data-softphone-state", "error", timeout=10000)
        expect(dave.locator("[data-sp-error]")).to_contain_text("The PBX refused the registration: 401")
        # No softphone: says so, never registers.
        expect(phone(erin)).to_have_attribute("data-softphone-state", "unregistered")
        expect(erin.locator("[data-sp-status]")).to_contain_text("No softphone is set up for you")

        dial(alice, "bob")
        expect(phone(bob)).to_have_attribute("data-softphone-state", "ringing")
        bob.locator("#softphone [data-sp-decline]").click()
        expect(alice.locator("[data-sp-error]")).to_have_text("bob declined the call (603 Decline).")
        registered(alice)

        dial(alice, "nobody")
        expect(alice.locator("[data-sp-error]")).to_have_text(
            "nobody is not available (480 Temporarily Unavailable)."
        )
    finally:
        for ctx in (alice_ctx, bob_ctx, dave_ctx, erin_ctx):
            ctx.close()


def test_a_refused_registration_is_tried_again_and_a_wrong_secret_is_not(
    browser: Browser, phone_hub: LiveHub, kamailio: Kamailio
) -> None:
    """A PBX that answers REGISTER 503 (restarting, overloaded) is asked again by itself; a wrong
    secret is not retried: its tab sends its REGISTER and the answer to the challenge, then stops."""
    dave_ctx, dave = sign_in(browser, phone_hub.url, "dave")
    gina_ctx: BrowserContext | None = None
    try:
        expect(dave.locator("[data-sp-error]")).to_contain_text("401", timeout=10000)
        expect(dave.locator("[data-sp-error]")).to_contain_text("wrong user or secret?")
        dave_registers = kamailio.registers_from("dave")
        assert dave_registers >= 1
        kamailio.refuse_registrations(True)
        gina_ctx, gina = sign_in(browser, phone_hub.url, "gina")
        expect(gina.locator("[data-sp-error]")).to_contain_text(
            "The PBX refused the registration: 503 Service Unavailable; trying again in 5 s", timeout=10000
        )
        refused = kamailio.registers_from("gina")
        kamailio.refuse_registrations(False)
        registered(gina)  # the retry, 5 s later
        assert kamailio.registers_from("gina") > refused
        assert kamailio.contacts("gina")
        # Meanwhile (over 5 s) dave's tab sent nothing more.
        assert kamailio.registers_from("dave") == dave_registers
    finally:
        kamailio.refuse_registrations(False)
        dave_ctx.close()
        if gina_ctx is not None:
            gina_ctx.close()


def test_the_chosen_microphone_and_speaker_carry_the_call(
    browser: Browser, phone_hub: LiveHub, kamailio: Kamailio
) -> None:
    """Chromium's fake devices: bob picks his second microphone and first speaker on the desk;
    the call he answers takes its sound from that microphone and plays on that speaker, and the
    choice is still there after a reload."""
    alice_ctx, alice = sign_in(browser, phone_hub.url, "alice")
    bob_ctx, bob = sign_in(browser, phone_hub.url, "bob")
    try:
        registered(alice)
        registered(bob)
        devices = bob.locator("[data-sp-devices]")
        devices.locator("summary").click()
        mic, speaker = bob.get_by_label("Microphone", exact=True), bob.get_by_label("Speaker", exact=True)
        expect(mic.locator("option", has_text="Fake Audio Input 2")).to_have_count(1)
        mic.select_option(label="Fake Audio Input 2")
        speaker.select_option(label="Fake Audio Output 1")
        mic_id, speaker_id = mic.input_value(), speaker.input_value()
        assert mic_id and speaker_id and mic_id != "default"

        bob.reload()
        registered(bob)
        bob.locator("[data-sp-devices] summary").click()
        expect(bob.get_by_label("Microphone", exact=True)).to_have_value(mic_id)
        expect(bob.get_by_label("Speaker", exact=True)).to_have_value(speaker_id)

        dial(alice, "bob")
        expect(phone(bob)).to_have_attribute("data-softphone-state", "ringing")
        bob.locator("#pop-list .pop[data-softphone-card]").get_by_role("button", name="Answer").click()
        expect(phone(bob)).to_have_attribute("data-softphone-state", "in_call")
        audio_grows(bob)
        used = bob.evaluate(
            """() => [...window.callbridgeSoftphone.peers.values()][0].getSenders()
                  .find((s) => s.track && s.track.kind === "audio").track.getSettings().deviceId"""
        )
        assert used == mic_id
        assert bob.evaluate("() => document.getElementById('sp-audio').sinkId") == speaker_id
        bob.locator("#softphone [data-sp-hangup]").first.click()
        registered(alice)
    finally:
        alice_ctx.close()
        bob_ctx.close()


def test_microphone_blocked_is_said_in_words(browser: Browser, phone_hub: LiveHub) -> None:
    alice_ctx, alice = sign_in(browser, phone_hub.url, "alice")
    bob_ctx, bob = sign_in(browser, phone_hub.url, "bob")
    try:
        registered(alice)
        registered(bob)
        bob.evaluate(
            """() => { navigator.mediaDevices.getUserMedia = () =>
                 Promise.reject(new DOMException("Permission denied", "NotAllowedError")); }"""
        )
        dial(alice, "bob")
        expect(phone(bob)).to_have_attribute("data-softphone-state", "ringing")
        bob.locator("#softphone [data-sp-answer]").click()
        expect(bob.locator("[data-sp-error]")).to_contain_text("The microphone is blocked or missing")
        registered(bob)
    finally:
        alice_ctx.close()
        bob_ctx.close()


def test_one_registration_per_user_across_tabs_and_handover(
    browser: Browser, phone_hub: LiveHub, kamailio: Kamailio
) -> None:
    context, first = sign_in(browser, phone_hub.url, "alice")
    bob_ctx, bob = sign_in(browser, phone_hub.url, "bob")
    try:
        registered(first)
        second = context.new_page()
        second.goto(phone_hub.url + "/desk")
        registered(second)  # mirrors the owner's state
        expect(phone(first)).to_have_attribute("data-softphone-role", "owner")
        expect(phone(second)).to_have_attribute("data-softphone-role", "mirror")
        second.wait_for_timeout(500)
        before = kamailio.contacts("alice")
        assert len(before) == 1, before

        # The mirror tab answers a call: the owner tab's phone takes it.
        registered(bob)
        dial(bob, "alice")
        expect(phone(second)).to_have_attribute("data-softphone-state", "ringing")
        second.locator("#pop-list [data-sp-answer]").click()
        expect(phone(second)).to_have_attribute("data-softphone-state", "in_call")
        expect(phone(first)).to_have_attribute("data-softphone-state", "in_call")
        audio_grows(first)
        second.locator("#softphone [data-sp-hangup]").click()
        registered(first)

        # Closing the owner hands the phone over within a couple of seconds.
        closed_at = time.monotonic()
        first.close()
        expect(phone(second)).to_have_attribute("data-softphone-role", "owner", timeout=3000)
        registered(second)
        handover = time.monotonic() - closed_at
        deadline = time.monotonic() + 5
        after = kamailio.contacts("alice")
        while time.monotonic() < deadline and (len(after) != 1 or after == before):
            time.sleep(0.2)
            after = kamailio.contacts("alice")
        assert len(after) == 1 and after != before, (before, after)
        assert handover < 3, handover
    finally:
        context.close()
        bob_ctx.close()


def test_blind_transfer_to_a_third_user(browser: Browser, phone_hub: LiveHub) -> None:
    alice_ctx, alice = sign_in(browser, phone_hub.url, "alice")
    bob_ctx, bob = sign_in(browser, phone_hub.url, "bob")
    carol_ctx, carol = sign_in(browser, phone_hub.url, "carol")
    try:
        for page in (alice, bob, carol):
            registered(page)
        dial(alice, "bob")
        expect(phone(bob)).to_have_attribute("data-softphone-state", "ringing")
        bob.locator("#softphone [data-sp-answer]").click()
        expect(phone(bob)).to_have_attribute("data-softphone-state", "in_call")

        # Without a number, Transfer says what to do.
        bob.locator("[data-sp-transfer]").click()
        expect(bob.locator("[data-sp-error]")).to_contain_text("Type the number to transfer to")
        bob.locator("#sp-number").fill("carol")
        bob.locator("[data-sp-transfer]").click()

        expect(phone(carol)).to_have_attribute("data-softphone-state", "ringing")
        expect(carol.locator("#pop-list .pop-caller")).to_have_text("alice")
        carol.locator("#pop-list [data-sp-answer]").click()
        expect(phone(carol)).to_have_attribute("data-softphone-state", "in_call")
        registered(bob)  # bob's leg hung up once carol took the call
        expect(alice.locator("#softphone [data-sp-call]")).to_have_count(1)
        expect(alice.locator("#softphone [data-sp-call]")).to_contain_text("carol")
        audio_grows(carol)
        audio_grows(alice)
        carol.locator("[data-sp-hangup]").click()
        registered(alice)
    finally:
        for ctx in (alice_ctx, bob_ctx, carol_ctx):
            ctx.close()


def test_attended_transfer_puts_the_held_caller_through(browser: Browser, phone_hub: LiveHub) -> None:
    """bob calls alice; alice calls carol to ask first (bob waits on hold), then puts bob
    through: bob and carol talk, alice is out of both calls (REFER with Replaces)."""
    alice_ctx, alice = sign_in(browser, phone_hub.url, "alice")
    bob_ctx, bob = sign_in(browser, phone_hub.url, "bob")
    carol_ctx, carol = sign_in(browser, phone_hub.url, "carol")
    try:
        for page in (alice, bob, carol):
            registered(page)
        dial(bob, "alice")
        expect(phone(alice)).to_have_attribute("data-softphone-state", "ringing")
        alice.locator("#softphone [data-sp-answer]").click()
        expect(phone(bob)).to_have_attribute("data-softphone-state", "in_call")

        dial(alice, "carol")  # bob goes on hold
        expect(phone(carol)).to_have_attribute("data-softphone-state", "ringing")
        carol.locator("#pop-list [data-sp-answer]").click()
        expect(phone(carol)).to_have_attribute("data-softphone-state", "in_call")
        held = alice.locator("#softphone [data-sp-call-state='on_hold']")
        expect(held).to_contain_text("bob")
        held.get_by_role("button", name="Transfer to carol").click()

        expect(alice.locator("[data-sp-error]")).to_contain_text("The call was put through to carol.")
        expect(alice.locator("#softphone [data-sp-call]")).to_have_count(0)
        registered(alice)
        for page, other in ((bob, "carol"), (carol, "bob")):
            expect(page.locator("#softphone [data-sp-call]")).to_have_count(1)
            expect(page.locator("#softphone [data-sp-call-state='in_call']")).to_contain_text(other)
        audio_grows(bob)
        audio_grows(carol)
        bob.locator("#softphone [data-sp-hangup]").click()
        registered(carol)
    finally:
        for ctx in (alice_ctx, bob_ctx, carol_ctx):
            ctx.close()


def test_the_hubs_card_for_the_same_call_gets_the_softphones_answer(
    browser: Browser, phone_hub: LiveHub
) -> None:
    """When the PBX link also pops the call, there is one card: the hub's, with Answer."""
    frank_ctx, frank = sign_in(browser, phone_hub.url, "frank")
    bob_ctx, bob = sign_in(browser, phone_hub.url, "bob")
    try:
        registered(frank)
        registered(bob)
        # The hub's card for a call from ext 1006, as live.js draws it from the PBX link's pop.
        bob.evaluate(
            """() => {
              const card = document.createElement("article");
              card.className = "pop pop-ringing";
              card.dataset.state = "ringing";
              card.dataset.key = "office/1700000000.1";
              card.innerHTML = '<h2 class="pop-caller">Frank</h2>'
                + '<p class="pop-number"><a class="dial" href="tel:1006" data-number="1006">ext 1006</a></p>'
                + '<div class="pop-actions"></div>';
              document.getElementById("pop-list").prepend(card);
            }"""
        )
        dial(frank, "bob")
        expect(phone(bob)).to_have_attribute("data-softphone-state", "ringing")
        hub_card = bob.locator("#pop-list .pop[data-key='office/1700000000.1']")
        expect(hub_card.get_by_role("button", name="Answer")).to_have_count(1)
        expect(bob.locator("#pop-list .pop[data-softphone-card]")).to_have_count(0)
        hub_card.get_by_role("button", name="Answer").click()
        expect(phone(bob)).to_have_attribute("data-softphone-state", "in_call")
        expect(hub_card.get_by_role("button", name="Answer")).to_have_count(0)
        audio_grows(bob)
        bob.locator("#softphone [data-sp-hangup]").click()
        registered(frank)
    finally:
        frank_ctx.close()
        bob_ctx.close()


def test_network_lost_reconnects_by_itself(browser: Browser, phone_hub: LiveHub, kamailio: Kamailio) -> None:
    # Last in the module: it restarts the SIP server.
    context, alice = sign_in(browser, phone_hub.url, "alice")
    try:
        registered(alice)
        kamailio.stop()
        expect(phone(alice)).to_have_attribute("data-softphone-state", "error")
        expect(alice.locator("[data-sp-error]")).to_have_text(
            "The connection to the PBX was lost; reconnecting by itself…"
        )
        kamailio.start()
        # JsSIP tries again 2 s after the loss, then less and less often (at most every 30 s).
        expect(phone(alice)).to_have_attribute("data-softphone-state", "registered", timeout=15000)
        expect(alice.locator("[data-sp-error]")).to_be_hidden()
        assert len(kamailio.contacts("alice")) == 1
    finally:
        context.close()
