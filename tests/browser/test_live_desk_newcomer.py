"""What a newcomer trips over on the live desk (issue #13), in a real Chromium: the pops never
cover the page, timers count from the call's start, a dismissed card stays dismissed, opt-in ring
and desktop notification, colleagues are not strangers, live calls keep their contact."""

from __future__ import annotations

import re
import threading

import pytest
from playwright.sync_api import Browser, Page, expect
from tests.browser import test_live_desk_browser as desk_tests
from tests.browser.conftest import ARTIFACTS, LiveHub
from tests.browser.test_live_desk_browser import ADA, SimThread, sign_in
from tests.browser.test_pages_console import WATCH_CSP

# The live desk's hub, simulator and per-test clean-up, shared with its browser tests.
sim = desk_tests.sim
desk_hub = desk_tests.desk_hub
phones_answer = desk_tests.phones_answer

pytestmark = pytest.mark.browser

# Records desktop notifications and sound playback instead of making them (headless Chromium has
# neither a notification centre nor speakers); the page's own code is what is under test.
RECORD_ALERTS = """
window.__notes = [];
window.__plays = [];
class RecordedNotification {
  constructor(title, options) {
    window.__notes.push({ title, body: (options || {}).body, tag: (options || {}).tag });
  }
  close() {}
  static get permission() { return "granted"; }
  static requestPermission() { return Promise.resolve("granted"); }
}
window.Notification = RecordedNotification;
HTMLMediaElement.prototype.play = function () { window.__plays.push(this.src); return Promise.resolve(); };
"""


def uncovered(page: Page, selector: str) -> bool:
    """Whether the middle of ``selector``'s element is what a click there would hit."""
    return bool(
        page.evaluate(
            """(sel) => {
              const node = document.querySelector(sel);
              const r = node.getBoundingClientRect();
              const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
              return !!hit && (node === hit || node.contains(hit));
            }""",
            selector,
        )
    )


def overlap(page: Page, a: str, b: str) -> bool:
    return bool(
        page.evaluate(
            """([a, b]) => {
              const x = document.querySelector(a).getBoundingClientRect();
              const y = document.querySelector(b).getBoundingClientRect();
              return x.left < y.right && y.left < x.right && x.top < y.bottom && y.top < x.bottom;
            }""",
            [a, b],
        )
    )


def test_the_pop_never_covers_the_page_wide_or_narrow(
    browser: Browser, desk_hub: LiveHub, sim: SimThread
) -> None:
    ctx, alice = sign_in(browser, desk_hub.url, "alice")
    ctx.add_init_script(WATCH_CSP)  # the layout's own measurements stay within the policy
    errors: list[str] = []
    alice.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    alice.set_viewport_size({"width": 1366, "height": 800})
    alice.goto(desk_hub.url + "/calls")
    expect(alice.locator("#live-state")).to_have_text("live")
    call = sim.run(sim.sim.start_call("inbound", caller=ADA, caller_name="", extension="1001"))
    pop = alice.locator("#pops .pop")
    expect(pop).to_have_count(1)
    # Wide: the pops have a column of their own; the filters, heading and flash stay clear.
    for target in ("form.filters", "h1", "#f-tag", "form.filters button[type=submit]"):
        assert not overlap(alice, target, "#pops"), target
        assert uncovered(alice, target), target
    ARTIFACTS.mkdir(exist_ok=True)
    alice.screenshot(path=str(ARTIFACTS / "newcomer-calls-1366.png"), full_page=True)
    # Narrow: a bar at the bottom, at most a third of the screen, and the page's end stays reachable.
    alice.set_viewport_size({"width": 390, "height": 844})
    alice.goto(desk_hub.url + "/desk")
    expect(pop).to_have_count(1)
    box = alice.locator("#pops").bounding_box()
    assert box is not None and box["height"] <= 844 / 3 + 1 and box["y"] + box["height"] <= 845
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    alice.screenshot(path=str(ARTIFACTS / "newcomer-desk-390.png"))
    alice.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    assert uncovered(alice, "footer.foot")
    assert uncovered(alice, "#notifications h2")
    alice.screenshot(path=str(ARTIFACTS / "newcomer-desk-390-bottom.png"))
    # Collapsible from the keyboard: the bar is a button that hides and shows the cards.
    bar = alice.locator("#pops-bar")
    expect(bar).to_contain_text("Ada Lovelace")
    bar.focus()
    alice.keyboard.press("Enter")
    expect(bar).to_have_attribute("aria-expanded", "false")
    expect(pop).to_be_hidden()
    collapsed = alice.locator("#pops").bounding_box()
    assert collapsed is not None and collapsed["height"] < 70
    alice.keyboard.press("Enter")
    expect(pop).to_be_visible()
    alice.keyboard.press("Tab")  # into the card: its links and buttons follow the bar
    hang_up = pop.get_by_role("button", name="Hang up")
    for _ in range(8):
        if hang_up.evaluate("b => b === document.activeElement"):
            break
        alice.keyboard.press("Tab")
    expect(hang_up).to_be_focused()
    alice.keyboard.press("Enter")
    expect(pop).to_have_attribute("data-state", "ended")
    assert call.linkedid not in sim.sim.calls
    assert alice.evaluate("window.__csp") == [] and errors == []
    ctx.close()


def test_a_managers_live_calls_stay_clear_of_her_own_pop(
    browser: Browser, desk_hub: LiveHub, sim: SimThread
) -> None:
    ctx, carol = sign_in(browser, desk_hub.url, "carol")
    carol.set_viewport_size({"width": 1366, "height": 800})
    carol.goto(desk_hub.url + "/desk/calls")
    expect(carol.locator("#live-state")).to_have_text("live")
    other = sim.submit(sim.sim.start_call("inbound", caller=ADA, caller_name="", extension="1002", ring=1.5))
    row = carol.locator("#live-calls tr[data-live-call]")
    expect(row).to_have_count(1)
    expect(row.locator("[data-state]")).to_have_text("ringing")
    expect(row).to_contain_text("Ada Lovelace")
    other_call = other.result(10)
    # Once answered, the contact stays; the duration runs.
    expect(row.locator("[data-state]")).to_have_text("talking")
    expect(row).to_contain_text("Ada Lovelace")
    duration = row.locator("td.duration")
    first = duration.inner_text()
    assert re.fullmatch(r"\d+:\d\d", first), first
    threading.Event().wait(2.2)
    assert duration.inner_text() != first
    started = row.locator("time").inner_text()
    mine = sim.run(sim.sim.start_call("inbound", caller="+12025550199", caller_name="", extension="1003"))
    expect(carol.locator("#pops .pop")).to_have_count(1)
    expect(carol.locator("#live-calls tr[data-live-call]")).to_have_count(2)
    for cell in ("#live-calls thead th:last-child", "#live-calls tbody tr:last-child td:last-child"):
        assert not overlap(carol, cell, "#pops"), cell
    carol.screenshot(path=str(ARTIFACTS / "newcomer-live-calls-1366.png"))
    # One format for the time, rendered by the page or live.
    carol.reload()
    expect(carol.locator("#live-calls tr[data-live-call]")).to_have_count(2)
    again = carol.locator(f'#live-calls tr[data-live-call] time >> text="{started}"')
    expect(again).to_have_count(1)
    expect(carol.locator("#live-calls")).to_contain_text("Ada Lovelace")
    sim.run(mine.hangup("caller"))
    sim.run(other_call.hangup("caller"))
    ctx.close()


def test_the_timer_counts_from_the_call_and_a_dismissed_card_stays_dismissed(
    browser: Browser, desk_hub: LiveHub, sim: SimThread
) -> None:
    ctx, alice = sign_in(browser, desk_hub.url, "alice")
    started = sim.submit(sim.sim.start_call("inbound", caller=ADA, caller_name="", extension="1001", ring=6))
    pop = alice.locator("#pops .pop")
    expect(pop).to_have_attribute("data-state", "ringing")
    threading.Event().wait(3)
    alice.reload()
    expect(pop).to_have_count(1)
    # The card of a reloaded page counts from the call's start, not from the reload.
    assert re.fullmatch(r"0:0[3-9]", pop.locator(".pop-time").inner_text()), pop.locator(
        ".pop-time"
    ).inner_text()
    pop.get_by_role("button", name="Dismiss").click()
    expect(pop).to_have_count(0)
    expect(alice.locator("#pops")).to_be_hidden()
    call = started.result(10)  # answered: the call moved on, the card stays away
    threading.Event().wait(0.8)
    expect(pop).to_have_count(0)
    alice.reload()
    expect(alice.locator("#live-state")).to_have_text("live")
    threading.Event().wait(0.5)
    expect(pop).to_have_count(0)
    sim.run(call.hangup("caller"))
    ctx.close()


def test_ring_and_desktop_notification_only_once_opted_in(
    browser: Browser, desk_hub: LiveHub, sim: SimThread
) -> None:
    ctx, alice = sign_in(browser, desk_hub.url, "alice")
    ctx.add_init_script(RECORD_ALERTS)
    alice.reload()
    expect(alice.locator("#live-state")).to_have_text("live")
    sim.run(sim.sim.place_call("inbound_answered", caller=ADA, caller_name="", extension="1001", ring=0.6))
    expect(alice.locator("#pops .pop")).to_have_count(1)
    assert alice.evaluate("window.__notes") == [] and alice.evaluate("window.__plays") == []
    alice.goto(desk_hub.url + "/account")
    alice.get_by_label("Ring in the page").check()
    alice.get_by_label("Show a desktop notification").check()
    expect(alice.locator("#notify-state")).to_contain_text("allows notifications")
    alice.get_by_role("button", name="Save alerts").click()
    expect(alice.locator(".flash")).to_contain_text("call alerts were saved")
    alice.screenshot(path=str(ARTIFACTS / "newcomer-account-alerts.png"))
    alice.goto(desk_hub.url + "/desk")
    expect(alice.locator("#live-state")).to_have_text("live")
    ringing = sim.submit(sim.sim.start_call("inbound", caller=ADA, caller_name="", extension="1001", ring=2))
    expect(alice.locator("#pops .pop[data-state='ringing']")).to_have_count(1)
    alice.wait_for_function("window.__plays.length > 0")
    assert all(src.endswith("/static/ring.wav") for src in alice.evaluate("window.__plays"))
    notes = alice.evaluate("window.__notes")
    assert len(notes) == 1 and "Ada Lovelace" in notes[0]["title"] and notes[0]["tag"].startswith("office/")
    call = ringing.result(10)
    sim.run(call.hangup("caller"))
    sound = alice.request.get(desk_hub.url + "/static/ring.wav")
    assert sound.status == 200 and sound.body()[:4] == b"RIFF" and len(sound.body()) < 20_000
    # Off again for the other tests.
    alice.goto(desk_hub.url + "/account")
    alice.get_by_label("Ring in the page").uncheck()
    alice.get_by_label("Show a desktop notification").uncheck()
    alice.get_by_role("button", name="Save alerts").click()
    ctx.close()


def test_a_colleague_is_no_stranger_and_the_dial_box_wants_a_real_number(
    browser: Browser, desk_hub: LiveHub, sim: SimThread
) -> None:
    ctx, alice = sign_in(browser, desk_hub.url, "alice")
    call = sim.run(sim.sim.start_call("internal", extension="1002", number="1001"))
    pop = alice.locator("#pops .pop")
    expect(pop.get_by_role("heading", name="bob")).to_be_visible()
    expect(pop).to_contain_text("ext 1002")
    expect(pop).to_contain_text("Internal call")
    expect(pop).not_to_contain_text("Unknown caller")
    expect(pop.get_by_role("link", name="Create contact")).to_have_count(0)
    alice.screenshot(path=str(ARTIFACTS / "newcomer-colleague-pop.png"))
    sim.run(call.hangup("caller"))
    alice.get_by_label("Number", exact=True).fill("12")
    alice.get_by_role("button", name="Call", exact=True).click()
    status = alice.locator("#dial-status")
    expect(status).to_have_attribute("data-state", "failed")
    expect(status).to_contain_text("neither an extension of this hub nor a phone number")
    assert not [a for a in sim.sim.actions if a.get("Action") == "Originate" and a.get("Exten") == "12"]
    ctx.close()
