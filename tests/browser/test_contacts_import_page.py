"""The import page in a real browser: files in several encodings, and every refusal as a sentence."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect
from tests.browser.conftest import ARTIFACTS, LiveHub

pytestmark = pytest.mark.browser

MIB = 1024 * 1024


def signed_in(browser: Browser, hub: LiveHub) -> Page:
    page = browser.new_page()
    page.goto(hub.url + "/login?next=/contacts/import")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(hub.admin_password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Import contacts from CSV")).to_be_visible()
    return page


def upload(page: Page, data: bytes, name: str = "contacts.csv", encoding: str = "") -> None:
    page.get_by_label("CSV file").set_input_files({"name": name, "mimeType": "text/csv", "buffer": data})
    if encoding:
        page.get_by_label("Encoding").select_option(encoding)
    page.get_by_role("button", name="Import").click()


def test_files_in_each_encoding_import_with_a_report(browser: Browser, live_hub: LiveHub) -> None:
    page = signed_in(browser, live_hub)
    # Excel's "Unicode text": UTF-16 with a mark, tab-separated.
    upload(page, "Name\tCompany\tPhone\r\nZoë Müller\tAcme\t+1 415 555 0100\r\n".encode("utf-16"), "u.txt")
    report = page.get_by_role("status")
    expect(report).to_contain_text("1 created, 0 updated, 1 company created.")
    expect(report).to_contain_text("Read as UTF-16.")
    # Shift_JIS: guessed, and the page says so.
    upload(page, "Name,Phone\n山田太郎,+81 3 1234 5678\n".encode("shift_jis"))
    expect(report).to_contain_text("1 created, 0 updated.")
    expect(report).to_contain_text("The file is not UTF-8; it was read as Shift_JIS, a guess")
    # Declared: no guess, no warning.
    upload(page, "Name,Phone\nJürgen Groß,+49 30 1234567\n".encode("cp1252"), encoding="cp1252")
    expect(report).to_contain_text("Read as Windows-1252.")
    expect(report).not_to_contain_text("a guess")
    # Bad rows are listed, the rest imported.
    upload(
        page, b'Name,Phone\nAda,+1 415 555 0101\nN\x00ul,+1 415 555 0102\nBob,"+1 415\nCarl,+1 415 555 0103\n'
    )
    expect(report).to_contain_text("1 created, 0 updated, 2 rows not imported.")
    expect(report).to_contain_text("Read as UTF-8.")  # the choice of encoding was for one file
    expect(page.get_by_role("cell", name="3", exact=True)).to_be_visible()
    expect(page.get_by_role("cell", name="4", exact=True)).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "contacts-import.png"), full_page=True)
    page.goto(live_hub.url + "/contacts?q=Zo%C3%AB")
    expect(page.get_by_role("link", name="Zoë Müller")).to_be_visible()
    page.close()


def test_refusals_are_sentences_never_json(browser: Browser, live_hub: LiveHub) -> None:
    page = signed_in(browser, live_hub)
    alert = page.get_by_role("alert")
    upload(page, b"Phone\n+14155550100\n")
    expect(alert).to_have_text("No name column: need one of name, first_name/last_name or company.")
    # Over the limit by a little (the page checks the file) and by a lot (refused before the page).
    for size in (20 * MIB + 10, 21 * MIB):
        upload(page, b"Name\n" + b"x" * (size - 5))
        expect(alert).to_contain_text("The file is larger than 20 MiB, the most an upload takes.")
        expect(page.locator("body")).not_to_contain_text('{"error"')
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "contacts-import-too-large.png"), full_page=True)
    page.close()
