"""The wallboard in a real Chromium, fed by a real hub process linked to the AMI simulator:
live within a second of the PBX event, fits a 1920×1080 and a 1280×720 screen without
scrolling, and a read-only TV link works signed out and stops once revoked."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from tests.browser.conftest import LiveHub, start_hub, stop_hub
from tests.browser.test_live_desk_browser import PASSWORD, SimThread

from callbridge.config import Settings
from callbridge.domain.pbx import PbxKind
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.pbxes import AsteriskSettings, add_pbx

pytestmark = pytest.mark.browser

SECRET = "ami-secret-for-browser-tests"


async def _seed(data_dir: Path, sim_port: int) -> None:
    hub = Hub.build(Settings(data_dir=data_dir))
    try:
        await hub.prepare()
        async with hub.db.unit() as repos:
            await hub.accounts(repos).create_user("carol", Role.MANAGER, PASSWORD, "Carol")
            await add_pbx(
                repos.pbxes,
                "office",
                PbxKind.ASTERISK,
                AsteriskSettings(
                    host="127.0.0.1", port=sim_port, username="hub", secret=SECRET, trunks=("trunk*",)
                ),
            )
    finally:
        await hub.close()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    s = SimThread()
    for ext in ("1001", "1002", "1003"):
        s.sim.add_queue_member("sales", ext)
    s.sim.add_queue_member("support", "1003")
    yield s
    s.close()


@pytest.fixture(scope="module")
def board_hub(tmp_path_factory: pytest.TempPathFactory, sim: SimThread) -> Iterator[LiveHub]:
    data_dir = tmp_path_factory.mktemp("wallboard")
    sim.run(_seed(data_dir, sim.sim.port), 60)
    hub = start_hub(data_dir)
    for _ in range(200):
        if sim.sim.logins:
            break
        threading.Event().wait(0.05)
    yield hub
    stop_hub(hub)


def fits(page: Page) -> None:
    """Nothing scrolls and every figure is on the screen."""
    sizes = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.scrollHeight,"
        " innerWidth, innerHeight]"
    )
    assert sizes[0] <= sizes[2] and sizes[1] <= sizes[3], sizes
    boxes = page.evaluate(
        "() => [...document.querySelectorAll('.tile .value, .tile .label, #queues tr, #agents li')]"
        ".map(e => { const r = e.getBoundingClientRect(); return [r.right, r.bottom]; })"
    )
    width, height = sizes[2], sizes[3]
    assert boxes and all(r <= width + 1 and b <= height + 1 for r, b in boxes), boxes
    for box in ("#queues-box", "#agents-box"):
        over = page.evaluate(
            f"() => {{ const b = document.querySelector('{box}'), i = b.firstElementChild;"
            " return [i.scrollHeight, b.clientHeight, i.scrollWidth, b.clientWidth]; }"
        )
        assert over[0] <= over[1] and over[2] <= over[3], (box, over)


def test_signed_in_wallboard_is_live_within_a_second_and_fits_any_screen(
    browser: Browser, board_hub: LiveHub, sim: SimThread
) -> None:
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    page = context.new_page()
    page.goto(board_hub.url + "/login?next=/wallboard")
    page.get_by_label("User name").fill("carol")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/wallboard$"))
    expect(page.locator("#state")).to_have_text("live")
    expect(page.locator('[data-k="available"]')).to_have_text("3")
    waiting = page.locator('[data-k="waiting"]')
    expect(waiting).to_have_text("0")
    # A caller joins the queue: the wallboard shows it within a second, the wait ticking.
    started = time.monotonic()
    caller = sim.run(_call(sim, "join"))
    expect(waiting).to_have_text("1", timeout=1000)
    assert time.monotonic() - started < 1.0
    expect(page.locator('[data-k="longest"]')).to_have_text(re.compile(r"^0:0[1-9]$"), timeout=3000)
    # A pause with its reason, live too.
    sim.run(_pause(sim, "1002", True, "lunch"))
    row = page.locator('#agents li[data-extension="1002"] .what')
    expect(row).to_have_text(re.compile(r"^paused \(lunch\) 0:0\d$"), timeout=1000)
    expect(page.locator('[data-k="paused"]')).to_have_text("1")
    expect(page.locator('[data-k="available"]')).to_have_text("2")
    fits(page)
    # Many more agents than fit at the default size: the lists shrink, nothing scrolls.
    for n in range(40):
        sim.sim.add_queue_member("sales", f"2{n:03d}")
        sim.run(_pause(sim, f"2{n:03d}", False, ""))
    expect(page.locator("#agents li")).to_have_count(43)
    fits(page)
    page.set_viewport_size({"width": 1280, "height": 720})
    page.wait_for_timeout(300)
    fits(page)
    page.screenshot(path=str(Path(__file__).resolve().parents[2] / "test-artifacts" / "wallboard-720.png"))
    sim.run(_abandon(sim, caller))
    expect(waiting).to_have_text("0", timeout=1000)
    expect(page.locator('#queues tr[data-queue="sales"] td').nth(4)).to_have_text("1")
    sim.run(_pause(sim, "1002", False, ""))
    context.close()


async def _call(sim: SimThread, what: str) -> object:
    return sim.sim.queue_join("sales", "+14155550123")


async def _abandon(sim: SimThread, caller: object) -> None:
    sim.sim.queue_abandon(caller, "sales", held=9)  # type: ignore[arg-type]


async def _pause(sim: SimThread, ext: str, paused: bool, reason: str) -> None:
    sim.sim.pause_member("sales", ext, paused, reason)


def test_tv_link_opens_signed_out_and_stops_after_revocation(
    browser: Browser, board_hub: LiveHub, sim: SimThread
) -> None:
    out = board_hub.cli("wallboard", "link", "--name", "Hall TV")
    url = out.splitlines()[0]
    assert "/wallboard/tv/" in url
    link_id = re.search(r"callbridge wallboard revoke (\d+)", out)
    assert link_id, out
    tv = board_hub.url + url[url.index("/wallboard/tv/") :]
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    page.goto(tv)
    expect(page.locator("#state")).to_have_text("live")
    assert "/login" not in page.url
    expect(page.locator('[data-k="available"]')).not_to_have_text("0")
    assert page.locator("#agents button").count() == 0  # read-only: no supervisor buttons
    started = time.monotonic()
    caller = sim.run(_call(sim, "join"))
    expect(page.locator('[data-k="waiting"]')).to_have_text("1", timeout=1000)
    assert time.monotonic() - started < 1.0
    sim.run(_abandon(sim, caller))
    fits(page)
    # The token opens nothing else: the API and the signed-in pages still want a user.
    assert context.request.get(board_hub.url + "/api/v1/wallboard").status == 401
    # Revoked from the CLI (another process): the open screen goes dark within seconds,
    # and the link opens nothing any more.
    board_hub.cli("wallboard", "revoke", link_id.group(1))
    expect(page.locator("#revoked")).to_be_visible(timeout=6000)
    answer = page.goto(tv)
    assert answer is not None and answer.status == 404
    expect(page.get_by_text("revoked or never existed")).to_be_visible()
    listed = board_hub.cli("wallboard", "list")
    assert "Hall TV" in listed
    context.close()
