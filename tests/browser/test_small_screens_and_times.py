"""At 390 px no page scrolls sideways and the call log's outcome shows; at 1366 px as before.
Times show in the user's zone, in the server's format and in the pages' script helper alike."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from tests.browser.conftest import ARTIFACTS, LiveHub
from tests.browser.test_pages_console import PAGES, _first_ids, _sign_in, pages_hub, pages_sim

pytestmark = pytest.mark.browser
__all__ = ["pages_hub", "pages_sim"]  # the fixtures, shared with the console test's module

SHOTS = {"/calls": "calls", "/contacts": "contacts", "/settings/users": "users", "/desk": "desk"}


def _admin_api(hub: LiveHub) -> httpx.Client:
    token = hub.cli("token", "create", "admin").strip().splitlines()[-1]
    return httpx.Client(base_url=hub.url, headers={"authorization": f"Bearer {token}"})


def _overflow(page: Page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


@pytest.mark.parametrize("width", [390, 1366])
def test_no_page_scrolls_sideways_and_the_outcome_shows(
    browser: Browser, pages_hub: LiveHub, width: int
) -> None:
    call, contact = _first_ids(pages_hub)
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": width, "height": 844})
    page = context.new_page()
    _sign_in(page, pages_hub, "admin")
    wide: dict[str, int] = {}
    for path in PAGES["admin"]:
        if path == "/login":
            continue
        page.goto(pages_hub.url + path.format(call=call, contact=contact))
        page.wait_for_load_state("load")
        page.wait_for_timeout(150)
        if _overflow(page) > 0:
            wide[path] = _overflow(page)
        if path in SHOTS:
            page.screenshot(path=str(ARTIFACTS / f"small-screens-{SHOTS[path]}-{width}.png"), full_page=True)
    assert wide == {}, wide
    page.goto(pages_hub.url + "/calls")
    outcome = page.locator('td[data-label="Outcome"]').first
    expect(outcome).to_be_visible()
    expect(outcome).to_contain_text(re.compile(r"answered|missed|busy|failed|in progress"))
    box = outcome.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, box
    if width == 390:
        # Stacked: the cell names its column.
        before = page.evaluate(
            "getComputedStyle(document.querySelector('td[data-label=\"Outcome\"]'), '::before').content"
        )
        assert before == '"Outcome"'
    context.close()


def test_times_follow_the_users_zone_on_pages_and_in_script(browser: Browser, pages_hub: LiveHub) -> None:
    call, _ = _first_ids(pages_hub)
    with _admin_api(pages_hub) as api:
        assert api.patch("/api/v1/me", json={"time_zone": "Asia/Kolkata"}).status_code == 200
        started = api.get(f"/api/v1/calls/{call}").json()["started_at"]
    try:
        context = browser.new_context(
            viewport={"width": 390, "height": 844}, timezone_id="America/Los_Angeles"
        )
        page = context.new_page()
        _sign_in(page, pages_hub, "admin")
        page.goto(f"{pages_hub.url}/calls/{call}")
        shown = page.locator("time").first.inner_text()
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d IST", shown), shown
        # The helper the desk and the screen pops use writes the same wall-clock time, in the
        # user's zone (not the browser's: this browser thinks it is in Los Angeles); the zone's
        # short name is the browser's own (ICU says "GMT+5:30" where the server says "IST").
        scripted = page.evaluate("(iso) => window.callbridgeTime(iso)", started)
        assert scripted[:19] == shown[:19], (scripted, shown)
        assert page.evaluate("(iso) => window.callbridgeTime(iso, 'time')", started) == shown[11:19]
        page.screenshot(path=str(ARTIFACTS / "times-call-390.png"), full_page=True)
        context.close()
    finally:
        with _admin_api(pages_hub) as api:
            api.patch("/api/v1/me", json={"time_zone": None})
