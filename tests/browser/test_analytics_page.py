"""The /analytics page in Chromium: the chart is drawn (vendored Chart.js, no CDN), the table
and the totals show the figures the API gives, the pickers and downloads work."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from tests.browser.conftest import ARTIFACTS, LiveHub, start_hub, stop_hub

from callbridge.config import Settings
from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallRinging,
    CallStarted,
    Direction,
    Disposition,
)
from callbridge.domain.users import Role
from callbridge.hub import Hub

pytestmark = pytest.mark.browser

DAY = datetime(2026, 3, 2, tzinfo=UTC)


def _calls() -> list[CallEvent]:
    events: list[CallEvent] = []
    for i in range(6):
        start = DAY + timedelta(hours=8 + i)
        call_id = f"a{i}"
        events += [
            CallStarted(
                pbx="main",
                call_id=call_id,
                at=start,
                direction=Direction.INBOUND,
                from_number="+14155550100",
                to_number="+14155559999",
            ),
            CallRinging(pbx="main", call_id=call_id, at=start, extension="1001"),
        ]
        if i % 3:
            events += [
                CallAnswered(pbx="main", call_id=call_id, at=start + timedelta(seconds=4), extension="1001"),
                CallEnded(
                    pbx="main",
                    call_id=call_id,
                    at=start + timedelta(seconds=64),
                    disposition=Disposition.ANSWERED,
                ),
            ]
        else:
            events.append(
                CallEnded(
                    pbx="main",
                    call_id=call_id,
                    at=start + timedelta(seconds=20),
                    disposition=Disposition.MISSED,
                )
            )
    return events


async def _seed(data_dir: Path) -> None:
    hub = Hub.build(Settings(data_dir=data_dir))
    try:
        await hub.prepare()
        async with hub.db.unit() as repos:
            await hub.accounts(repos).create_user("nobody", Role.AGENT, "user-password-1")
        async with hub.db.unit() as repos:
            admin = await hub.accounts(repos).get_user("admin")
            await repos.extensions.map("main", "1001", admin.id)
        await hub.ingest_batch(_calls())
    finally:
        await hub.close()


@pytest.fixture(scope="module")
def analytics_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    data_dir = tmp_path_factory.mktemp("analytics")
    # Sync Playwright keeps an event loop running in this thread: seed from another one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _seed(data_dir)).result(timeout=120)
    hub = start_hub(data_dir)
    yield hub
    stop_hub(hub)


def _sign_in(browser: Browser, hub: LiveHub, name: str, password: str) -> Page:
    page = browser.new_page()
    page.goto(hub.url + "/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    return page


def test_the_page_draws_the_figures(browser: Browser, analytics_hub: LiveHub) -> None:
    page = _sign_in(browser, analytics_hub, "admin", analytics_hub.admin_password)
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name="Analytics").click()
    expect(page.get_by_role("heading", name="Analytics")).to_be_visible()
    page.get_by_label("From", exact=True).fill("2026-03-02T00:00")
    page.get_by_label("To", exact=True).fill("2026-03-03T00:00")
    page.get_by_label("Time zone").fill("UTC")
    page.get_by_label("Group by").select_option("hour")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#a-chart[data-ready='1']")).to_be_attached()
    expect(page.locator('#a-totals [data-figure="offered"]')).to_have_text("6")
    expect(page.locator('#a-totals [data-figure="answered"]')).to_have_text("4")
    expect(page.locator('#a-totals [data-figure="missed"]')).to_have_text("2")
    rows = page.locator("#a-table tbody tr")
    expect(rows).to_have_count(24)
    expect(rows.nth(8)).to_contain_text("2026-03-02T08:00")
    # The chart holds the same numbers as the table: answered + missed + abandoned per hour.
    drawn = page.evaluate(
        "() => window.analyticsChart.data.datasets.slice(0, 3).map(d => d.data.slice(8, 14))"
    )
    assert drawn == [[0, 1, 1, 0, 1, 1], [1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0]]
    # The chart is really painted: the canvas is not blank.
    painted = page.evaluate(
        "() => { const c = document.getElementById('a-chart'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
        " for (let i = 3; i < d.length; i += 4) { if (d[i]) { n++; } } return n; }"
    )
    assert painted > 1000
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "analytics.png"), full_page=True)
    # The download links ask for the same figures.
    href = page.locator("#a-xlsx").get_attribute("href")
    assert href is not None and "format=xlsx" in href and "group=hour" in href
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    csv_href = page.locator("#a-csv").get_attribute("href")
    answer = httpx.get(analytics_hub.url + str(csv_href), cookies=cookies, timeout=10)
    assert answer.status_code == 200
    assert answer.text.splitlines()[-1].startswith("total,6,4,2,0,")
    page.close()


def test_an_agent_who_owns_nothing_sees_zeros(browser: Browser, analytics_hub: LiveHub) -> None:
    page = _sign_in(browser, analytics_hub, "nobody", "user-password-1")
    page.goto(analytics_hub.url + "/analytics?from=2026-03-02&to=2026-03-03&tz=UTC&group=day")
    expect(page.get_by_text("The figures of the calls you took part in.")).to_be_visible()
    expect(page.locator('#a-totals [data-figure="offered"]')).to_have_text("0")
    expect(page.locator("#a-chart[data-ready='1']")).to_be_attached()
    page.close()
