"""Sign in, see the shell, sign out; a wrong password shows an error — in a real browser."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, expect
from tests.browser.conftest import ARTIFACTS, LiveHub

pytestmark = pytest.mark.browser


def test_sign_in_shell_sign_out(browser: Browser, live_hub: LiveHub) -> None:
    page = browser.new_page()
    page.goto(live_hub.url + "/settings")
    expect(page).to_have_url(re.compile(r"/login\?next=/settings$"))
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(live_hub.admin_password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(live_hub.url + "/settings")
    nav = page.get_by_role("navigation", name="Main")
    for label in ("Calls", "Contacts", "Settings"):
        expect(nav.get_by_role("link", name=label)).to_be_visible()
    expect(page.get_by_role("heading", name="Settings")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "shell.png"), full_page=True)
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto(live_hub.url + "/settings")
    expect(page).to_have_url(re.compile(r"/login"))
    page.close()


def test_wrong_password_shows_error(browser: Browser, live_hub: LiveHub) -> None:
    page = browser.new_page()
    page.goto(live_hub.url + "/login")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill("definitely-wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("wrong user name or password")
    expect(page.get_by_label("User name")).to_have_value("admin")
    page.close()


def test_admin_creates_token_in_settings(browser: Browser, live_hub: LiveHub) -> None:
    page = browser.new_page()
    page.goto(live_hub.url + "/login")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(live_hub.admin_password)
    page.get_by_role("button", name="Sign in").click()
    page.goto(live_hub.url + "/settings")
    page.get_by_label("Token name").fill("reporting")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("status")).to_contain_text("New API token, shown once: cb_")
    expect(page.get_by_role("cell", name="reporting")).to_be_visible()
    page.close()
