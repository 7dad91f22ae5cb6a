"""Settings → Softphones: an admin sets, corrects and removes a user's phone in the browser; the
page refuses bad settings in words and never shows a secret; an agent cannot open it."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect
from tests.browser.conftest import ARTIFACTS, LiveHub

pytestmark = pytest.mark.browser

AGENT_PASSWORD = "agent-password-1"


def _sign_in(browser: Browser, hub: LiveHub, name: str, password: str) -> Page:
    page = browser.new_context().new_page()
    page.goto(hub.url + "/login?next=/settings/softphones")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    return page


def test_an_admin_sets_and_removes_a_softphone_and_an_agent_cannot(
    browser: Browser, live_hub: LiveHub
) -> None:
    live_hub.cli("user", "add", "bob", "--role", "agent", "--password", AGENT_PASSWORD)
    page = _sign_in(browser, live_hub, "admin", live_hub.admin_password)
    expect(page.get_by_role("heading", name="Softphones")).to_be_visible()
    row = page.locator('#softphones tr[data-user="bob"]')
    expect(row).to_contain_text("none")

    form = page.locator("#softphone-form")
    form.get_by_label("User", exact=True).select_option("bob")
    form.get_by_label("WebSocket URL").fill("ws://pbx.example.com/ws")  # unencrypted, not local
    form.get_by_label("SIP address", exact=True).fill("sip:1002@pbx.example.com")
    form.get_by_label("SIP secret").fill("s3cret-sip")
    form.get_by_role("button", name="Save softphone").click()
    expect(page.get_by_role("alert")).to_contain_text("only allowed on localhost; use wss://")

    form.get_by_label("User", exact=True).select_option("bob")
    form.get_by_label("WebSocket URL").fill("wss://pbx.example.com/ws")
    form.get_by_label("SIP address", exact=True).fill("sip:1002@pbx.example.com")
    form.get_by_label("SIP secret").fill("s3cret-sip")
    form.get_by_label("STUN servers").fill("stun:stun.example.com:3478")
    form.get_by_role("button", name="Save softphone").click()
    expect(page.get_by_role("status")).to_contain_text("Softphone of bob saved.")
    expect(row).to_contain_text("sip:1002@pbx.example.com")
    expect(row).to_contain_text("wss://pbx.example.com/ws")
    expect(row).to_contain_text("on, 1 STUN/TURN")
    assert "s3cret-sip" not in page.content()
    answer = page.request.get(live_hub.url + "/api/v1/users/bob/softphone")
    assert answer.ok and answer.json()["ice_servers"] == [{"urls": ["stun:stun.example.com:3478"]}]

    # Changed without a secret: the stored one is kept (no "no secret" in its state).
    form.get_by_label("User", exact=True).select_option("bob")
    form.get_by_label("WebSocket URL").fill("wss://pbx2.example.com/ws")
    form.get_by_label("SIP address", exact=True).fill("sip:1002@pbx.example.com")
    form.get_by_role("button", name="Save softphone").click()
    expect(row).to_contain_text("wss://pbx2.example.com/ws")
    expect(row).not_to_contain_text("no secret")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "softphones-admin.png"), full_page=True)

    # What the API says of it: the form replaced the settings, but for the secret it left empty.
    answer = page.request.get(live_hub.url + "/api/v1/users/bob/softphone")
    assert answer.ok and answer.json()["has_secret"] is True and "secret" not in answer.json()
    assert answer.json()["ws_url"] == "wss://pbx2.example.com/ws" and answer.json()["ice_servers"] == []

    # An agent cannot open the page (nor post to it).
    agent = _sign_in(browser, live_hub, "bob", AGENT_PASSWORD)
    expect(agent.get_by_text("your role does not allow this")).to_be_visible()
    csrf = agent.evaluate("document.body.dataset.csrf")
    refused = agent.request.post(live_hub.url + "/settings/softphones/bob/delete", form={"csrf_token": csrf})
    assert refused.status == 403

    row.get_by_role("button", name="Remove").click()
    expect(page.get_by_role("status")).to_contain_text("Softphone of bob removed.")
    expect(row).to_contain_text("none")
