"""The recording player in Chromium, against a real hub process: a stored recording (espeak-ng
speech, then quiet to five minutes, 13 MB) plays on the call's page (``currentTime`` advances), a
seek near the end is fetched with an HTTP Range request (206), a comment pinned to a moment
seeks the player there when clicked; a shared link plays in a fresh, signed-out browser context,
and once revoked answers the 410 page."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import wave
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Response, expect
from sqlalchemy import create_engine, insert
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, LiveHub, start_hub, stop_hub

from callbridge.store.calls import calls
from callbridge.store.recordings import recordings

SECONDS = 300  # five minutes: more than Chromium buffers ahead, so a seek to the end is a new Range
SEEK_TO = 290.0


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # Headless Chromium plays media (into a fake audio sink); no click is needed for play().
    b = playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"],
    )
    yield b
    b.close()


def speech_wav(path: Path) -> None:
    """espeak-ng saying a sentence, then quiet up to :data:`SECONDS` (22.05 kHz, 16 bit, mono)."""
    espeak = shutil.which("espeak-ng")
    assert espeak, "the tests need espeak-ng (Debian package; scripts/test.sh installs it)"
    said = path.with_name("said.wav")
    subprocess.run(
        [espeak, "-s", "150", "-w", str(said), "Hello, this is a test call about the payment."],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with wave.open(str(said), "rb") as src:
        params = src.getparams()
        frames = src.readframes(src.getnframes())
    rate, width = params.framerate, params.sampwidth
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(frames)
        left = SECONDS * rate - len(frames) // width
        second = b"\0" * (rate * width)
        while left > 0:
            n = min(left, rate)
            out.writeframes(second[: n * width])
            left -= n


@pytest.fixture(scope="module")
def rec_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveHub, int, int]]:
    """A hub with one call whose recording is stored; yields (hub, call id, recording id)."""
    hub = start_hub(tmp_path_factory.mktemp("hub"))
    try:
        now = datetime.now(UTC)
        key = f"office/{now:%Y/%m}/1.wav"
        file = hub.data_dir / "recordings" / key
        file.parent.mkdir(parents=True)
        speech_wav(file)
        engine = create_engine(f"sqlite:///{hub.data_dir / 'callbridge.db'}")
        with engine.begin() as conn:
            call_id = conn.execute(
                insert(calls)
                .values(
                    pbx="office",
                    pbx_call_id="rec-1",
                    direction="inbound",
                    from_number="+14155550100",
                    to_number="100",
                    started_at=now - timedelta(minutes=10),
                    answered_at=now - timedelta(minutes=10),
                    ended_at=now - timedelta(minutes=5),
                    disposition="answered",
                    match="none",
                    updated_at=now,
                    recording="rec-1.wav",
                )
                .returning(calls.c.id)
            ).scalar_one()
            recording_id = conn.execute(
                insert(recordings)
                .values(
                    call_id=call_id,
                    pbx="office",
                    reference="rec-1.wav",
                    status="ready",
                    storage_key=key,
                    size_bytes=file.stat().st_size,
                    duration_seconds=float(SECONDS),
                    content_type="audio/wav",
                    sha256=hashlib.sha256(file.read_bytes()).hexdigest(),
                    created_at=now,
                    updated_at=now,
                )
                .returning(recordings.c.id)
            ).scalar_one()
        engine.dispose()
        yield hub, int(call_id), int(recording_id)
    finally:
        stop_hub(hub)


def sign_in(browser: Browser, hub: LiveHub, next_path: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.goto(f"{hub.url}/login?next={next_path}")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(hub.admin_password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(hub.url + next_path)
    return context, page


def audio_ranges(page: Page) -> list[tuple[str, int]]:
    """(Range header, status) of every audio answer the page gets, as they come."""
    seen: list[tuple[str, int]] = []

    def on_response(response: Response) -> None:
        if "/audio" in response.url:
            seen.append((response.request.headers.get("range", ""), response.status))

    page.on("response", on_response)
    return seen


def past(page: Page, seconds: float) -> None:
    """Wait until the player has played past ``seconds`` (not seeking)."""
    # A function, not an expression: the pages' Content-Security-Policy forbids eval.
    page.wait_for_function(
        "(t) => { const a = document.querySelector('audio'); return !a.seeking && a.currentTime > t; }",
        arg=seconds,
        timeout=20_000,
    )


def plays_and_seeks(page: Page, seen: list[tuple[str, int]], size: int) -> None:
    audio = page.locator("audio").first
    audio.evaluate("a => a.play()")
    past(page, 0.5)
    fetched_before = len(seen)
    audio.evaluate(f"a => {{ a.currentTime = {SEEK_TO}; }}")
    past(page, SEEK_TO + 0.5)
    # The seek was served by a Range request for bytes near the end: 206, not the whole file.
    later = seen[fetched_before:]
    starts = [int(r.split("=")[1].split("-")[0]) for r, status in later if r and status == 206]
    assert starts and max(starts) > size // 2, seen
    assert all(status == 206 for r, status in seen if r), seen


def test_a_recording_plays_seeks_by_range_and_a_pinned_comment_seeks_the_player(
    browser: Browser, rec_hub: tuple[LiveHub, int, int]
) -> None:
    hub, call_id, _recording_id = rec_hub
    size = next((hub.data_dir / "recordings").rglob("1.wav")).stat().st_size
    context, page = sign_in(browser, hub, f"/calls/{call_id}")
    try:
        seen = audio_ranges(page)
        plays_and_seeks(page, seen, size)
        audio = page.locator("audio").first
        audio.evaluate("a => a.pause()")

        # A comment pinned to 1:15: the page lists it with its moment as a button.
        page.get_by_label("Comment").fill("Listen from here: the payment")
        page.get_by_label("At (m:ss, optional)").fill("1:15")
        page.get_by_role("button", name="Add comment").click()
        pinned = page.locator("#comments .comment-at")
        expect(pinned).to_have_text("1:15")
        audio = page.locator("audio").first
        assert audio.evaluate("a => a.currentTime") < 1  # a fresh page: at the start
        pinned.click()
        page.wait_for_function(
            "(at) => Math.abs(document.querySelector('audio').currentTime - at) < 0.5", arg=75, timeout=10_000
        )
        # From the pinned moment it plays on.
        audio.evaluate("a => a.play()")
        past(page, 75.3)
    finally:
        context.close()


def test_a_shared_link_plays_signed_out_and_answers_410_once_revoked(
    browser: Browser, rec_hub: tuple[LiveHub, int, int]
) -> None:
    hub, _call_id, recording_id = rec_hub
    size = next((hub.data_dir / "recordings").rglob("1.wav")).stat().st_size
    token = hub.cli("token", "create", "admin").strip().splitlines()[-1].strip()
    api = httpx.Client(base_url=hub.url, headers={"authorization": f"Bearer {token}"})
    try:
        made = api.post(f"/api/v1/recordings/{recording_id}/shares", json={"expires_in_days": 1})
        assert made.status_code == 201, made.text
        url, share_id = made.json()["url"], made.json()["id"]
        assert url.startswith(hub.url + "/shared/")

        stranger = browser.new_context()  # nobody signed in
        try:
            page = stranger.new_page()
            seen = audio_ranges(page)
            answer = page.goto(url)
            assert answer is not None and answer.status == 200
            expect(page.locator("audio")).to_have_count(1)
            assert "/calls/" not in page.content()  # nothing of the hub but the audio
            plays_and_seeks(page, seen, size)
        finally:
            stranger.close()
        plays = api.get(f"/api/v1/recordings/{recording_id}/shares").json()[0]["plays"]
        assert len(plays) >= 1  # the play from its first byte was logged

        assert api.delete(f"/api/v1/recordings/{recording_id}/shares/{share_id}").status_code == 204
        again = browser.new_context()
        try:
            page = again.new_page()
            answer = page.goto(url)
            assert answer is not None and answer.status == 410
            expect(page.locator("body")).to_contain_text("This link has expired or was revoked")
            expect(page.locator("audio")).to_have_count(0)
        finally:
            again.close()
    finally:
        api.close()
