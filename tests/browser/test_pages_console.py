"""Every page, as each role, in a real Chromium: no Content-Security-Policy violation and no
console error — the strict policy stays, so the pages must not need inline styles or scripts."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect
from tests.browser.conftest import LiveHub, start_hub, stop_hub
from tests.browser.test_live_desk_browser import ADA, PASSWORD, SimThread, _seed, _wait_for_login

pytestmark = pytest.mark.browser

# Records violations from the first byte of each page, before any of its own scripts run.
WATCH_CSP = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline') + ' ' + (e.sample || ''));
});
"""


@pytest.fixture(scope="module")
def pages_sim() -> Iterator[SimThread]:
    s = SimThread()
    yield s
    s.close()


@pytest.fixture(scope="module")
def pages_hub(tmp_path_factory: pytest.TempPathFactory, pages_sim: SimThread) -> Iterator[LiveHub]:
    data_dir = tmp_path_factory.mktemp("pages")
    pages_sim.run(_seed(data_dir, pages_sim.sim.port), 60)
    hub = start_hub(data_dir)
    _wait_for_login(pages_sim)
    pages_sim.run(
        pages_sim.sim.place_call("inbound_answered", caller=ADA, extension="1001", ring=0.2, talk=0.2)
    )
    yield hub
    stop_hub(hub)


def _first_ids(hub: LiveHub) -> tuple[int, int]:
    """A call and a contact to open, read through the API as admin."""
    with httpx.Client(base_url=hub.url) as api:
        token = hub.cli("token", "create", "admin").strip().splitlines()[-1]
        api.headers["authorization"] = f"Bearer {token}"
        for _ in range(100):
            calls = api.get("/api/v1/calls").json()["items"]
            if calls and calls[0]["ended_at"]:
                break
            threading.Event().wait(0.1)
        contacts = api.get("/api/v1/contacts").json()["items"]
    assert calls and contacts
    return int(calls[0]["id"]), int(contacts[0]["id"])


PAGES = {
    "admin": [
        "/",
        "/desk",
        "/desk/calls",
        "/calls",
        "/calls/{call}",
        "/contacts",
        "/contacts/new",
        "/contacts/import",
        "/contacts/tags",
        "/contacts/{contact}",
        "/contacts/{contact}/edit",
        "/voicemails",
        "/settings",
        "/settings/users",
        "/settings/pbxes",
        "/settings/pbxes/office",
        "/settings/extensions",
        "/settings/agents",
        "/account",
        "/login",
    ],
    "carol": [
        "/",
        "/desk",
        "/desk/calls",
        "/calls",
        "/calls/{call}",
        "/contacts",
        "/contacts/{contact}",
        "/account",
    ],
    "alice": [
        "/",
        "/desk",
        "/calls",
        "/calls/{call}",
        "/contacts",
        "/contacts/{contact}",
        "/voicemails",
        "/account",
    ],
}


def _sign_in(page: Page, hub: LiveHub, name: str) -> None:
    page.goto(hub.url + "/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(hub.admin_password if name == "admin" else PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).not_to_have_url(re.compile(r"/login"))


@pytest.mark.parametrize("name", list(PAGES))
def test_no_page_breaks_the_content_security_policy_or_logs_an_error(
    browser: Browser, pages_hub: LiveHub, name: str
) -> None:
    call, contact = _first_ids(pages_hub)
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    context.add_init_script(WATCH_CSP)
    page = context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    _sign_in(page, pages_hub, name)
    seen: dict[str, list[str]] = {}
    for path in PAGES[name]:
        url = pages_hub.url + path.format(call=call, contact=contact)
        answer = page.goto(url)
        assert answer is not None and answer.status == 200, (path, answer and answer.status)
        page.wait_for_load_state("load")
        page.wait_for_timeout(150)  # live.js connects and renders after load
        found = list(page.evaluate("window.__csp")) + errors
        errors.clear()
        if found:
            seen[path] = found
    context.close()
    assert seen == {}, seen


def test_the_api_reference_page_shows_every_operation_offline_and_within_the_policy(
    browser: Browser, pages_hub: LiveHub
) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    context.add_init_script(WATCH_CSP)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(pages_hub.url) else outside.append(r.url))
    _sign_in(page, pages_hub, "alice")
    page.goto(pages_hub.url + "/api/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("callbridge")
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/calls/{call_id}").first).to_be_visible()
    operations = page.locator(".opblock").count()
    assert operations >= 40, operations
    assert page.evaluate("window.__csp") == [] and errors == [], (page.evaluate("window.__csp"), errors)
    assert outside == []  # no CDN: everything comes from the hub
    favicon = page.request.get(pages_hub.url + "/favicon.ico")
    assert favicon.status == 200 and favicon.headers["content-type"] == "image/svg+xml"
    context.close()
