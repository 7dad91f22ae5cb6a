"""Optional transcoding of fetched recordings with ffmpeg (Debian's): a WAV made by the test is
stored as Opus (or MP3), smaller, served with the stored file's content type and with Range; the
row keeps the original's duration and checksum. A file ffmpeg cannot read is stored as fetched."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from tests.conftest import api_token
from tests.web.test_recordings_api import FAST, recorded_call, setup_world, tone_wav, wait_recording

from callbridge.config import Settings
from callbridge.hub import Hub

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="needs ffmpeg (scripts/test.sh installs it)"
)


@pytest.fixture(params=["opus", "mp3"])
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(settings: Settings, fmt: str) -> Settings:
    return settings.model_copy(update={"recordings_transcode": fmt})


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


def probe(path: Path) -> dict[str, str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name:format=duration", "-of", "json", path],
        check=True,
        capture_output=True,
    ).stdout
    found = json.loads(out)
    return {"codec": found["streams"][0]["codec_name"], "duration": found["format"]["duration"]}


def test_the_transcoding_setting_is_off_by_default_and_checked() -> None:
    assert Settings().recordings_transcode == ""
    assert Settings(recordings_transcode="opus").recordings_transcode == "opus"
    with pytest.raises(ValidationError):
        Settings(recordings_transcode="flac")


async def test_a_wav_is_stored_transcoded_with_the_originals_duration_and_checksum(
    api: httpx.AsyncClient, hub: Hub, monitor: Path, fmt: str
) -> None:
    audio = tone_wav(3.0)
    file = monitor / "in-1002-t1.wav"
    file.write_bytes(audio)
    call = await recorded_call(hub, "t1", 0, str(file))

    recording = await wait_recording(api, call, "ready")
    ext, codec, content_type = {
        "opus": (".opus", "opus", "audio/ogg"),
        "mp3": (".mp3", "mp3", "audio/mpeg"),
    }[fmt]
    stored = [p for p in (hub.settings.data_dir / "recordings").rglob("*") if p.is_file()]
    assert [p.name for p in stored] == [f"{recording['id']}{ext}"]
    assert recording["content_type"] == content_type
    assert recording["size_bytes"] == stored[0].stat().st_size
    assert recording["size_bytes"] < len(audio) / 4  # it saves space
    assert recording["duration_seconds"] == 3.0  # the original's
    async with hub.db.unit() as repos:
        row = await repos.recordings.get(recording["id"])
    assert row is not None and row.sha256 == hashlib.sha256(audio).hexdigest()  # the original's
    found = probe(stored[0])
    # MP3 pads to whole frames (and an encoder delay): the stored file's own length is close,
    # the row's is the original's exactly.
    assert found["codec"] == codec and abs(float(found["duration"]) - 3.0) < 0.25

    url = recording["audio_url"]
    whole = await api.get(url)
    assert whole.status_code == 200 and whole.content == stored[0].read_bytes()
    assert whole.headers["content-type"] == content_type
    part = await api.get(url, headers={"range": "bytes=10-109"})
    assert part.status_code == 206 and part.content == whole.content[10:110]
    assert part.headers["content-type"] == content_type


async def test_a_file_ffmpeg_cannot_read_is_stored_as_fetched(
    api: httpx.AsyncClient, hub: Hub, monitor: Path, caplog: pytest.LogCaptureFixture
) -> None:
    junk = b"RIFF" + bytes(range(256)) * 40
    file = monitor / "in-1002-t2.wav"
    file.write_bytes(junk)
    caplog.set_level(logging.WARNING, logger="callbridge.media.transcode")
    call = await recorded_call(hub, "t2", 0, str(file))

    recording = await wait_recording(api, call, "ready")
    assert recording["content_type"] == "audio/wav" and recording["size_bytes"] == len(junk)
    assert (await api.get(recording["audio_url"])).content == junk
    assert "ffmpeg could not convert" in caplog.text
    scratch = hub.settings.data_dir / "recordings" / ".incoming"
    assert [p for p in scratch.rglob("*") if p.is_file()] == []  # nothing left behind
