"""Recordings end to end on one host: an Asterisk's MixMonitor file (a real WAV written by the
test) → pending recording → the fetch worker → stored under the data dir → served with Range
to those who may see the call, and to nobody else."""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import struct
import wave
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import FAST_HASHER, add_user, api_token
from tests.web.test_call_privacy import T0, answered

from callbridge.config import Settings
from callbridge.domain.events import CallEvent, RecordingAvailable
from callbridge.domain.pbx import PbxKind
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.pbxes import AsteriskSettings, add_pbx
from callbridge.services.recordings import FetchPolicy
from callbridge.store.calls import CallFilter
from callbridge.web.app import create_app

# Quick retries that go on for about 20 s: a test that makes the file appear after checking the
# pending state must not find the attempts used up on a loaded machine (3 lasted 0.3 s).
FAST = FetchPolicy(base_delay=0.05, max_delay=0.2, no_source_delay=0.2, max_attempts=100)


def tone_wav(seconds: float, rate: int = 8000, hz: float = 440.0) -> bytes:
    """A mono 16-bit PCM WAV of a sine tone."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        count = int(seconds * rate)
        frames = [int(12000 * math.sin(2 * math.pi * hz * n / rate)) for n in range(count)]
        w.writeframes(struct.pack(f"<{count}h", *frames))
    return out.getvalue()


async def setup_world(hub: Hub, monitor: Path) -> None:
    """PBX "main" with its recordings directory; bob (1002) takes the calls; dave owns nothing."""
    bob = await add_user(hub, "bob", Role.AGENT)
    await add_user(hub, "dave", Role.AGENT)
    async with hub.db.unit() as repos:
        settings = AsteriskSettings(host="127.0.0.1", username="cb", secret="s", recordings_dir=str(monitor))
        await add_pbx(repos.pbxes, "main", PbxKind.ASTERISK, settings)
        await repos.extensions.map("main", "1002", bob.id)


async def recorded_call(hub: Hub, call_id: str, minute: int, reference: str) -> int:
    """An answered call of bob's that Asterisk recorded to ``reference``; its row id."""
    events: list[CallEvent] = answered(call_id, minute, "1002")
    at = T0 + timedelta(minutes=minute, seconds=70)
    events.append(RecordingAvailable(pbx="main", call_id=call_id, at=at, recording=reference))
    await hub.handle_events(events)
    async with hub.db.unit() as repos:
        items, _ = await repos.calls.search(CallFilter(), 500)
    return next(c.id for c in items if c.pbx_call_id == call_id)


async def wait_recording(
    api: httpx.AsyncClient, call_id: int, status: str, within: float = 10
) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:  # the API is what is under test: poll it briefly
            answer = await api.get(f"/api/v1/calls/{call_id}")
            assert answer.status_code == 200, answer.text
            recording = answer.json()["recording"]
            ok = recording is not None and recording["status"] == status
            if ok and (status != "pending" or recording["reason"]):
                return dict(recording)
            await asyncio.sleep(0.05)


@pytest.fixture
def monitor(tmp_path: Path) -> Path:
    path = tmp_path / "spool" / "monitor"
    path.mkdir(parents=True)
    return path


@pytest.fixture
async def api(app: object, hub: Hub, monitor: Path) -> AsyncIterator[httpx.AsyncClient]:
    assert hub.fetcher is not None
    hub.fetcher.policy = FAST
    await setup_world(hub, monitor)
    token = await api_token(hub, "bob")
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers) as c:
        yield c


async def test_a_recorded_call_plays_with_ranges_for_whoever_may_see_it(
    api: httpx.AsyncClient, app: object, hub: Hub, monitor: Path
) -> None:
    audio = tone_wav(2.0)
    file = monitor / "2026" / "03" / "01" / "in-1002-c1.wav"
    file.parent.mkdir(parents=True)
    file.write_bytes(audio)
    call = await recorded_call(hub, "c1", 0, str(file))

    recording = await wait_recording(api, call, "ready")
    assert recording == {
        "id": recording["id"],
        "status": "ready",
        "duration_seconds": 2.0,
        "size_bytes": len(audio),
        "content_type": "audio/wav",
        "audio_url": f"/api/v1/recordings/{recording['id']}/audio",
        "reason": None,
        "held": False,
        "pbx_copy": None,
    }
    detail = (await api.get(f"/api/v1/calls/{call}")).json()
    assert detail["transcript"] is None and detail["recording_file"] == str(file)
    # Stored under the data dir, checksum kept.
    stored = list((hub.settings.data_dir / "recordings").rglob("*.wav"))
    assert len(stored) == 1 and stored[0].read_bytes() == audio
    async with hub.db.unit() as repos:
        row = await repos.recordings.get(recording["id"])
    assert row is not None and row.sha256 == hashlib.sha256(audio).hexdigest()

    url = recording["audio_url"]
    whole = await api.get(url)
    assert whole.status_code == 200 and whole.content == audio
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "audio/wav"
    part = await api.get(url, headers={"range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == audio[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(audio)}"
    tail = await api.get(url, headers={"range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == audio[-10:]
    rest = await api.get(url, headers={"range": f"bytes={len(audio) - 5}-"})
    assert rest.status_code == 206 and rest.content == audio[-5:]
    past = await api.get(url, headers={"range": f"bytes={len(audio)}-"})
    assert past.status_code == 416
    assert past.json()["error"]["code"] == "range_not_satisfiable"
    assert past.headers["content-range"] == f"bytes */{len(audio)}"

    # An agent who owns nothing: the recording does not exist for them.
    dave = {"authorization": f"Bearer {await api_token(hub, 'dave')}"}
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=dave) as other:
        assert (await other.get(url)).status_code == 404
        assert (await other.get(url, headers={"range": "bytes=0-9"})).status_code == 404
        assert (await other.get(f"/api/v1/calls/{call}")).status_code == 404
    assert (await api.get("/api/v1/recordings/999999/audio")).status_code == 404

    page = await api.get(f"/calls/{call}", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert f'<audio controls preload="metadata" src="{url}"' in page.text
    assert 'src="/static/player.js"' in page.text and 'data-speed="1.5"' in page.text


async def test_not_fetched_yet_says_why_and_never_links(
    api: httpx.AsyncClient, hub: Hub, monitor: Path
) -> None:
    missing = await recorded_call(hub, "c2", 1, str(monitor / "later.wav"))
    pending = await wait_recording(api, missing, "pending")
    assert pending["audio_url"] is None and "later.wav" in pending["reason"]
    page = await api.get(f"/calls/{missing}", headers={"accept": "text/html"})
    assert "Recording pending: no file later.wav" in page.text and "<audio" not in page.text
    assert (await api.get(f"/api/v1/recordings/{pending['id']}/audio")).status_code == 404

    # The file shows up (a slow disk, NFS): the next retry fetches it.
    (monitor / "later.wav").write_bytes(tone_wav(0.5))
    ready = await wait_recording(api, missing, "ready")
    assert ready["duration_seconds"] == 0.5

    # A name outside the recordings directory is never read: failed at once, with the reason.
    outside = await recorded_call(hub, "c3", 2, str(monitor / ".." / ".." / "secret.wav"))
    (monitor.parent.parent / "secret.wav").write_bytes(tone_wav(0.1))
    failed = await wait_recording(api, outside, "failed")
    assert "outside the recordings directory" in failed["reason"] and failed["audio_url"] is None


async def test_pending_recordings_survive_a_restart(settings: Settings, tmp_path: Path) -> None:
    monitor = tmp_path / "monitor"
    monitor.mkdir()
    first = Hub.build(settings, hasher=FAST_HASHER)
    await first.prepare()
    await setup_world(first, monitor)
    # The hub stops before it fetched anything (its fetcher never ran).
    call = await recorded_call(first, "c9", 0, "c9.wav")
    async with first.db.unit() as repos:
        [row] = await repos.recordings.for_call(call)
    assert row.status.value == "pending"
    await first.close()

    (monitor / "c9.wav").write_bytes(tone_wav(1.0))
    second = Hub.build(settings, hasher=FAST_HASHER)
    app = create_app(hub=second)
    async with app.router.lifespan_context(app):
        async with asyncio.timeout(10):
            while True:
                async with second.db.unit() as repos:
                    [row] = await repos.recordings.for_call(call)
                if row.status.value == "ready":
                    break
                await asyncio.sleep(0.05)
    assert row.size_bytes == len(tone_wav(1.0)) and row.duration_seconds == 1.0
