"""The voicemail inbox in Chromium, against a real hub process: a stored message plays in the
page's player (``currentTime`` advances, the audio comes with Range answers), and "Mark as
heard" marks it heard."""

from __future__ import annotations

import hashlib
import math
import struct
import wave
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Browser, Playwright, expect
from sqlalchemy import create_engine, insert
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, LiveHub, start_hub, stop_hub
from tests.browser.test_recording_player import audio_ranges, sign_in

from callbridge.store.voicemails import voicemails


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"],
    )
    yield b
    b.close()


@pytest.fixture(scope="module")
def vm_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveHub, int]]:
    hub = start_hub(tmp_path_factory.mktemp("hub"))
    try:
        now = datetime.now(UTC)
        key = f"voicemail/office/{now:%Y/%m}/1.wav"
        file = hub.data_dir / "recordings" / key
        file.parent.mkdir(parents=True)
        with wave.open(str(file), "wb") as w:  # five seconds of a 440 Hz tone
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            n = 5 * 8000
            w.writeframes(
                struct.pack(f"<{n}h", *(int(9000 * math.sin(2 * math.pi * 440 * i / 8000)) for i in range(n)))
            )
        engine = create_engine(f"sqlite:///{hub.data_dir / 'callbridge.db'}")
        with engine.begin() as conn:
            vm_id = conn.execute(
                insert(voicemails)
                .values(
                    pbx="office",
                    mailbox="7001@default",
                    extension="7001",
                    reference="default/7001/1700000000-00000000",
                    caller_number="+14155550100",
                    caller_name="Ada",
                    received_at=now - timedelta(minutes=3),
                    duration_seconds=5,
                    audio_status="ready",
                    storage_key=key,
                    size_bytes=file.stat().st_size,
                    sha256=hashlib.sha256(file.read_bytes()).hexdigest(),
                    content_type="audio/wav",
                    created_at=now,
                )
                .returning(voicemails.c.id)
            ).scalar_one()
        engine.dispose()
        yield hub, int(vm_id)
    finally:
        stop_hub(hub)


def test_a_voicemail_plays_in_the_inbox_and_is_marked_heard(
    browser: Browser, vm_hub: tuple[LiveHub, int]
) -> None:
    hub, vm_id = vm_hub
    context, page = sign_in(browser, hub, "/voicemails")
    seen = audio_ranges(page)
    page.reload()  # with the listener on from the start
    try:
        item = page.locator(f"[data-voicemail='{vm_id}']")
        expect(item).to_contain_text("Mailbox 7001@default")
        expect(item).to_contain_text("(415) 555-0100")
        expect(item.locator(".badge")).to_have_text("new")
        audio = item.locator("audio")
        audio.evaluate("a => a.play()")
        page.wait_for_function(
            "() => { const a = document.querySelector('audio'); return !a.seeking && a.currentTime > 1; }",
            timeout=20_000,
        )
        assert seen and all(status in (200, 206) for _, status in seen), seen
        item.get_by_role("button", name="Mark as heard").click()
        expect(page).to_have_url(hub.url + "/voicemails")
        expect(
            page.locator(f"[data-voicemail='{vm_id}']").get_by_role("button", name="Mark as new")
        ).to_be_visible()
        expect(page.locator(f"[data-voicemail='{vm_id}'] .badge")).to_have_count(0)
        page.goto(hub.url + "/voicemails?status=new")
        expect(page.locator("#no-voicemail")).to_be_visible()
    finally:
        context.close()
