"""Follow-ups on the desk in a real Chromium: a missed call appears under "My follow-ups" as it
happens (with the opt-in desktop notification), folds with the next one, the caller's next pop
says a call is owed, and a callback through click-to-call, answered, closes it by itself."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from tests.browser.conftest import ARTIFACTS, LiveHub, start_hub, stop_hub
from tests.browser.test_live_desk_browser import ADA, PASSWORD, SimThread, _seed, _wait_for_login

pytestmark = pytest.mark.browser

# A stand-in for the browser's Notification (headless Chromium shows none): it records titles.
FAKE_NOTIFICATION = """
window.__notes = [];
window.Notification = class {
  constructor(title, options) { window.__notes.push(title); }
  close() {}
  static get permission() { return "granted"; }
  static requestPermission() { return Promise.resolve("granted"); }
};
"""


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    s = SimThread()
    yield s
    s.close()


@pytest.fixture(scope="module")
def followup_hub(tmp_path_factory: pytest.TempPathFactory, sim: SimThread) -> Iterator[LiveHub]:
    data_dir = tmp_path_factory.mktemp("followups")
    sim.run(_seed(data_dir, sim.sim.port), 60)
    hub = start_hub(data_dir, {"CALLBRIDGE_FOLLOWUP_MIN_RING_SECONDS": "1"})
    _wait_for_login(sim)
    yield hub
    stop_hub(hub)


def sign_in(browser: Browser, url: str, name: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    context.add_init_script(FAKE_NOTIFICATION)
    page = context.new_page()
    page.goto(url + "/login?next=/desk")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(url + "/desk")
    expect(page.locator("#live-state")).to_have_text("live")
    return context, page


def test_a_missed_call_is_owed_on_the_desk_until_a_callback_reaches_the_caller(
    browser: Browser, followup_hub: LiveHub, sim: SimThread
) -> None:
    ctx, alice = sign_in(browser, followup_hub.url, "alice")
    csrf = alice.evaluate("document.body.dataset.csrf")
    answer = alice.request.put(
        followup_hub.url + "/api/v1/me/alerts",
        data={"ring_sound": False, "desktop_notifications": True},
        headers={"x-csrf-token": csrf},
    )
    assert answer.ok, answer.text()
    alice.reload()
    expect(alice.locator("#live-state")).to_have_text("live")
    section = alice.locator("#followups")
    expect(section).to_contain_text("Nobody is waiting for a call from you")

    sim.run(sim.sim.place_call("inbound_missed", caller=ADA, caller_name="", extension="1001", ring=1.5))
    items = alice.locator("#followup-list li[data-task]")
    expect(items).to_have_count(1)  # live: no reload
    expect(items.first).to_contain_text(
        "call back (415) 555-0100, Ada Lovelace, Analytical Engines, missed 1× today"
    )
    expect(items.first).to_contain_text("owed since")
    expect(section.locator("[data-followup-counts]")).to_have_text("(1 open, 1 overdue)")
    alice.wait_for_function("window.__notes.some((t) => t.startsWith('call back (415) 555-0100'))")

    sim.run(sim.sim.place_call("inbound_missed", caller=ADA, caller_name="", extension="1001", ring=1.5))
    expect(items.first).to_contain_text("missed 2× today")
    expect(items).to_have_count(1)

    # Ada calls again: the pop tells Alice she owes her a call.
    ringing = sim.submit(sim.sim.start_call("inbound", caller=ADA, caller_name="", extension="1001", ring=4))
    pop = alice.locator("#pops .pop:not([data-state='ended'])")
    expect(pop.locator(".pop-owed")).to_contain_text(re.compile(r"You owe them a call since \d\d:\d\d"))
    ARTIFACTS.mkdir(exist_ok=True)
    alice.screenshot(path=str(ARTIFACTS / "follow-ups-owed-pop.png"))
    call = ringing.result(15)
    sim.run(call.hangup("caller"))  # Alice answered and talked to her: the task closes itself.
    expect(items).to_have_count(0)
    expect(section).to_contain_text("Nobody is waiting for a call from you")

    # Missed again; Alice calls back from the follow-up itself (click-to-call), Ada answers.
    sim.run(sim.sim.place_call("inbound_missed", caller=ADA, caller_name="", extension="1001", ring=1.5))
    expect(items).to_have_count(1)
    alice.screenshot(path=str(ARTIFACTS / "follow-ups-desk.png"))
    items.first.locator(f'a.dial[data-number="{ADA}"]').click()
    expect(alice.locator("#dial-status")).to_contain_text(f"now calling {ADA}")
    threading.Event().wait(1.0)
    for linkedid, placed in list(sim.sim.calls.items()):
        if linkedid.startswith("cb-"):
            sim.run(placed.hangup("caller"))
    expect(items).to_have_count(0)
    done = alice.request.get(followup_hub.url + "/api/v1/tasks?status=done&assignee=me").json()
    assert len(done["items"]) == 2
    assert all(t["closed_by_call_id"] for t in done["items"])
    ctx.close()


def test_done_and_snooze_from_the_desk(browser: Browser, followup_hub: LiveHub, sim: SimThread) -> None:
    ctx, bob = sign_in(browser, followup_hub.url, "bob")
    sim.run(
        sim.sim.place_call(
            "inbound_missed", caller="+14155550142", caller_name="", extension="1002", ring=1.5
        )
    )
    sim.run(
        sim.sim.place_call(
            "inbound_missed", caller="+14155550143", caller_name="", extension="1002", ring=1.5
        )
    )
    items = bob.locator("#followup-list li[data-task]")
    expect(items).to_have_count(2)
    first = items.first
    expect(first).to_contain_text("(415) 555-0142")  # overdue first: the older one
    first.get_by_role("button", name="Snooze 1 h").click()
    expect(items.first).to_contain_text("(415) 555-0143")
    expect(items.nth(1)).to_contain_text("snoozed until")
    expect(bob.locator("[data-followup-counts]")).to_have_text("(2 open, 1 overdue)")
    items.first.get_by_role("button", name="Done").click()
    expect(items).to_have_count(1)
    ctx.close()


def _admin(hub: LiveHub) -> httpx.Client:
    c = httpx.Client(base_url=hub.url, timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text)
    assert token
    c.post("/login", data={"username": "admin", "password": hub.admin_password, "csrf_token": token.group(1)})
    fresh = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/settings").text)
    assert fresh
    c.headers["x-csrf-token"] = fresh.group(1)
    return c


def test_a_note_and_a_type_from_the_pop_while_the_call_runs(
    browser: Browser, followup_hub: LiveHub, sim: SimThread
) -> None:
    admin = _admin(followup_hub)
    try:
        assert admin.post("/api/v1/call-types", json={"name": "Support"}).status_code == 201
    finally:
        admin.close()
    ctx, alice = sign_in(browser, followup_hub.url, "alice")
    ringing = sim.submit(
        sim.sim.start_call("inbound", caller="+14155550150", caller_name="", extension="1001", ring=2)
    )
    pop = alice.locator("#pops .pop")
    expect(pop).to_have_count(1)
    expect(pop).to_have_attribute("data-state", "ringing")
    pop.get_by_text("Note & type").click()
    pop.get_by_label("Note").fill("printer on floor 3 jams")
    call = ringing.result(15)
    expect(pop).to_have_attribute("data-state", "talking")
    # The card moved on; what Alice typed is still there.
    expect(pop.get_by_label("Note")).to_have_value("printer on floor 3 jams")
    pop.get_by_label("Call type").select_option("Support")
    pop.get_by_role("button", name="Save note").click()
    expect(pop.get_by_role("status")).to_have_text("Saved.")
    sim.run(call.hangup("caller"))
    expect(pop).to_have_attribute("data-state", "ended")
    calls = alice.request.get(followup_hub.url + "/api/v1/calls?q=%2B14155550150").json()["items"]
    assert [(c["note"], c["call_type"]) for c in calls] == [("printer on floor 3 jams", "Support")]
    ctx.close()
