"""Recordings in an S3-compatible store, against a real S3 API server: ``moto_server`` (moto from
PyPI) started by the test as a subprocess on loopback. A recording fetched by the worker lands in
the bucket, is served with Range from ranged GETs, and is deleted by the purge; an unreachable
store leaves the recording pending with the reason and never answers 500."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from pydantic import SecretStr, ValidationError
from tests.conftest import FAST_HASHER, api_token
from tests.web.test_recordings_api import FAST, recorded_call, setup_world, tone_wav, wait_recording

from callbridge.config import Settings
from callbridge.domain.errors import InvalidInput, NotFound
from callbridge.domain.recordings import S3Location, parse_recordings_url
from callbridge.hub import Hub
from callbridge.media.s3 import S3Storage
from callbridge.services.recordings import FetchPolicy
from callbridge.web.app import create_app

ACCESS = "callbridge-test"
SECRET = "s3-secret-" + "x7Qp9Lm2"  # must never show in logs, reasons or answers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API server (moto_server) on loopback for this module's tests."""
    port = free_port()
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def s3_client(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
    )


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    name = f"calls-{secrets.token_hex(4)}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


def object_keys(endpoint: str, bucket: str) -> list[str]:
    listed = s3_client(endpoint).list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


@pytest.fixture
def settings(settings: Settings, s3_endpoint: str, bucket: str) -> Settings:
    return settings.model_copy(
        update={
            "recordings_url": f"s3://{bucket}/pbx-audio",
            "recordings_s3_endpoint": s3_endpoint,
            "recordings_s3_region": "us-east-1",
            "recordings_s3_access_key": ACCESS,
            "recordings_s3_secret_key": SecretStr(SECRET),
        }
    )


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


def test_the_recordings_url_is_a_bucket_and_prefix_and_the_secret_stays_hidden() -> None:
    assert parse_recordings_url("") is None
    assert parse_recordings_url("s3://calls") == S3Location("calls", "")
    assert parse_recordings_url("s3://calls/office/audio/") == S3Location("calls", "office/audio")
    for bad in ("https://calls/x", "s3://", "s3://key:secret@calls/x", "s3://calls/a/../b", "s3://c/x?y=1"):
        with pytest.raises(InvalidInput):
            parse_recordings_url(bad)
        with pytest.raises(ValidationError):
            Settings(recordings_url=bad)
    settings = Settings(recordings_url="s3://calls/x", recordings_s3_secret_key=SECRET)
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())


async def test_put_ranges_and_delete_against_a_real_s3_server(
    tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    storage = S3Storage(
        S3Location(bucket, "pre/fix"),
        tmp_path / "incoming",
        endpoint_url=s3_endpoint,
        region="us-east-1",
        access_key=ACCESS,
        secret_key=SECRET,
    )
    assert SECRET not in repr(storage)
    sent_ranges: list[str | None] = []

    def seen(request: Any, **_: Any) -> None:
        sent_ranges.append(request.headers.get("Range", b"").decode() or None)

    storage._client.meta.events.register("before-send.s3.GetObject", seen)
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one chunk, an odd size
    source = tmp_path / "x.part"
    source.write_bytes(data)
    key = "main/2026/03/7.wav"
    try:
        assert await storage.exists(key) is False
        with pytest.raises(NotFound):
            await storage.size(key)
        await storage.put(key, source)
        assert not source.exists()  # consumed
        assert object_keys(s3_endpoint, bucket) == ["pre/fix/main/2026/03/7.wav"]
        head = s3_client(s3_endpoint).head_object(Bucket=bucket, Key="pre/fix/" + key)
        assert head["ContentType"] == "audio/wav"
        assert await storage.exists(key) is True
        assert await storage.size(key) == len(data)

        async def read(first: int = 0, last: int | None = None) -> bytes:
            return b"".join([c async for c in storage.read_range(key, first, last)])

        assert await read(100, 199) == data[100:200]
        assert await read(len(data) - 5) == data[-5:]
        assert await read(1_000_000, 2_000_000) == data[1_000_000:2_000_001]
        whole = b"".join([c async for c in storage.open(key)])
        assert hashlib.sha256(whole).digest() == hashlib.sha256(data).digest()
        # Each range was one ranged GET (the whole object is fetched only when asked for).
        assert sent_ranges == ["bytes=100-199", f"bytes={len(data) - 5}-", "bytes=1000000-2000000", None]

        for bad in ("../x", "/abs", "a//b", ""):
            with pytest.raises(InvalidInput):
                await storage.size(bad)
        await storage.delete(key)
        assert await storage.exists(key) is False
        assert object_keys(s3_endpoint, bucket) == []
        await storage.delete(key)  # deleting what is gone is not an error
        with pytest.raises(NotFound):
            await read()
    finally:
        await storage.close()


async def test_a_recording_is_stored_in_s3_served_with_ranges_and_purged(
    api: httpx.AsyncClient, hub: Hub, monitor: Path, s3_endpoint: str, bucket: str
) -> None:
    audio = tone_wav(2.0)
    file = monitor / "in-1002-s1.wav"
    file.write_bytes(audio)
    call = await recorded_call(hub, "s1", 0, str(file))

    recording = await wait_recording(api, call, "ready")
    assert recording["size_bytes"] == len(audio) and recording["content_type"] == "audio/wav"
    assert recording["duration_seconds"] == 2.0
    keys = object_keys(s3_endpoint, bucket)
    assert keys == [f"pbx-audio/main/{datetime.now(UTC):%Y/%m}/{recording['id']}.wav"]
    stored = s3_client(s3_endpoint).get_object(Bucket=bucket, Key=keys[0])["Body"].read()
    assert stored == audio
    # Nothing of it stays on the hub's disk.
    local = hub.settings.data_dir / "recordings"
    assert [p for p in local.rglob("*") if p.is_file()] == []

    url = recording["audio_url"]
    whole = await api.get(url)
    assert whole.status_code == 200 and whole.content == audio
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "audio/wav"
    part = await api.get(url, headers={"range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == audio[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(audio)}"
    tail = await api.get(url, headers={"range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == audio[-10:]
    past = await api.get(url, headers={"range": f"bytes={len(audio)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(audio)}"

    # The store goes away: a clear 503, not a 500 and not a cut-off body.
    assert hub.storage is not None
    working = hub.storage
    hub.storage = S3Storage(
        S3Location(bucket, "pbx-audio"),
        local / ".incoming",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region="us-east-1",
        access_key=ACCESS,
        secret_key=SECRET,
        connect_timeout=0.5,
        max_attempts=1,
    )
    try:
        down = await api.get(url, headers={"range": "bytes=0-99"})
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "storage_unavailable"
        assert SECRET not in down.text
        # It goes away between the size (HEAD) and the bytes (GET): still a clear 503 before any
        # byte of the answer is sent.
        hub.storage.size = working.size  # type: ignore[method-assign]
        for headers in ({"range": "bytes=0-99"}, {}):
            down = await api.get(url, headers=headers)
            assert down.status_code == 503 and down.json()["error"]["code"] == "storage_unavailable"
    finally:
        await hub.storage.close()  # type: ignore[attr-defined]
        hub.storage = working

    # A retention rule purges it: the object is deleted from the bucket.
    async with hub.db.unit() as repos:
        await repos.retention.add(1, "", "", "")
    done = await hub.purge_recordings()
    assert [c.recording_id for c in done] == [recording["id"]]
    assert object_keys(s3_endpoint, bucket) == []
    with pytest.raises(ClientError):
        s3_client(s3_endpoint).head_object(Bucket=bucket, Key=keys[0])
    assert (await api.get(url)).status_code == 404


async def test_an_unreachable_store_leaves_the_recording_pending_with_the_reason(
    settings: Settings, monitor: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed = free_port()
    down = settings.model_copy(update={"recordings_s3_endpoint": f"http://127.0.0.1:{closed}"})
    hub = Hub.build(down, hasher=FAST_HASHER)
    assert isinstance(hub.storage, S3Storage)
    # Keep the test quick: one attempt, a short connect timeout.
    location, scratch = hub.storage.location, hub.storage.scratch
    await hub.storage.close()
    hub.storage = S3Storage(
        location,
        scratch,
        endpoint_url=f"http://127.0.0.1:{closed}",
        region="us-east-1",
        access_key=ACCESS,
        secret_key=SECRET,
        connect_timeout=0.5,
        max_attempts=1,
    )
    assert hub.fetcher is not None
    hub.fetcher._storage = hub.storage
    hub.fetcher.policy = FetchPolicy(base_delay=0.3, max_delay=0.5, max_attempts=3)
    await hub.prepare()
    caplog.set_level(logging.DEBUG, logger="callbridge")
    try:
        application = create_app(hub=hub)
        async with application.router.lifespan_context(application):
            await setup_world(hub, monitor)
            token = await api_token(hub, "bob")
            transport = httpx.ASGITransport(app=application)
            headers = {"authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", headers=headers
            ) as api:
                file = monitor / "in-1002-u1.wav"
                file.write_bytes(tone_wav(0.5))
                call = await recorded_call(hub, "u1", 0, str(file))
                recording = await wait_recording(api, call, "pending")
                assert recording["reason"].startswith("the recordings store could not be reached")
                assert recording["audio_url"] is None
                assert (await api.get(f"/api/v1/recordings/{recording['id']}/audio")).status_code == 404
                # It keeps being retried, then fails with the reason (FAST: 3 attempts).
                failed = await wait_recording(api, call, "failed")
                assert "recordings store could not be reached" in failed["reason"]
                assert (await api.get(f"/api/v1/calls/{call}")).status_code == 200
    finally:
        await hub.close()
    assert SECRET not in caplog.text
    assert not [p for p in scratch.rglob("*") if p.is_file()]  # the fetched file was not left behind
