"""Recordings uploaded by the agent: AMI simulator (MixMonitor) → in-process agent → hub served
by uvicorn → stored recording played through ``GET /api/v1/recordings/{id}/audio``.

Faults: a cut of every connection mid-upload, a corrupted chunk, an agent restarted mid-upload,
a file outside the recordings directory, a file over the size cap."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import sqlite3
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.agent.conftest import Served, add_agent_pbx
from tests.agent.procs import TcpProxy
from tests.agent.test_agent_link import SECRET, eventually

from callbridge.agent.config import AgentConfig
from callbridge.agent.runner import Agent
from callbridge.domain.recordings import Recording
from callbridge.media.transcode import Transcoder
from callbridge.pbx.asterisk.simulator import AmiSimulator
from callbridge.services.recording_uploads import AgentUploads, Announced

CHUNK = 64 * 1024


def write_wav(path: Path, seconds: float, seed: int = 1) -> bytes:
    """A PCM WAV (8 kHz, 16 bit, mono) with varying samples; returns its bytes."""
    frames = bytearray()
    value = seed
    for _ in range(int(8000 * seconds)):
        value = (value * 1103515245 + 12345) & 0x7FFFFFFF
        frames += (value >> 16 & 0xFFFF).to_bytes(2, "little")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(frames))
    return path.read_bytes()


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[AmiSimulator]:
    async with AmiSimulator(secret=SECRET, auth_failure_delay=0.05) as s:
        s.monitor_dir = str(tmp_path / "monitor")
        (tmp_path / "monitor").mkdir()
        yield s


def config(url: str, token: str, sim: AmiSimulator, tmp_path: Path, **extra: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "ami_port": sim.port,
        "ami_username": "hub",
        "ami_secret": SECRET,
        "outbox": tmp_path / "outbox.sqlite3",
        "status_interval": 0.2,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "guard_backend": "off",
        "recordings_dir": Path(sim.monitor_dir),
        "upload_chunk_bytes": CHUNK,
        "upload_settle_seconds": 0.0,
    }
    return AgentConfig(hub=url, token=token, **{**values, **extra})


@contextlib.asynccontextmanager
async def running(cfg: AgentConfig) -> AsyncIterator[Agent]:
    agent = Agent(cfg)
    task = asyncio.create_task(agent.run())
    try:
        await eventually(lambda: agent.hub_connected and agent.ami.client.connected, what="agent up")
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def recorded_call(
    sim: AmiSimulator, seconds: float, *, name: str = "${UNIQUEID}.wav"
) -> tuple[str, Path, bytes]:
    """A recorded inbound call: MixMonitor starts, the test writes the file Asterisk would,
    the callee hangs up. Returns (linkedid, file, its bytes)."""
    call = await sim.start_call("inbound", record=name)
    path = Path(call.channels[0].recording)
    data = write_wav(path, seconds) if path.parent == Path(sim.monitor_dir) else b""
    await call.hangup("callee")
    return call.linkedid, path, data


async def recording_of(served: Served, linkedid: str, reference: str) -> Recording | None:
    async with served.hub.db.unit() as repos:
        return await repos.recordings.find_for_upload("office", reference, linkedid)


async def until_status(
    served: Served, linkedid: str, reference: str, status: str, limit: float = 20
) -> Recording:
    found: list[Recording] = []

    async def check() -> bool:
        rec = await recording_of(served, linkedid, reference)
        if rec is not None and rec.status.value == status:
            found.append(rec)
            return True
        return False

    await eventually(check, limit=limit, what=f"recording {status}")
    return found[0]


class CountingUploads:
    """Counts the chunk bytes the hub appended; ``after`` runs once the n-th chunk is written."""

    def __init__(self, uploads: AgentUploads) -> None:
        self.uploads = uploads
        self.written = 0
        self.chunks = 0
        self.original = uploads.write
        self.hooks: dict[int, Callable[[], Any]] = {}

    async def write(
        self, pbx: str, recording_id: int, announced: Announced, offset: int, data: bytes, chunk_sha256: str
    ) -> int:
        held = await self.original(pbx, recording_id, announced, offset, data, chunk_sha256)
        self.written += len(data)
        self.chunks += 1
        hook = self.hooks.pop(self.chunks, None)
        if hook is not None:
            result = hook()
            if asyncio.iscoroutine(result):
                await result
        return held


@pytest.fixture
def counting(served: Served, monkeypatch: pytest.MonkeyPatch) -> CountingUploads:
    assert served.hub.uploads is not None
    counter = CountingUploads(served.hub.uploads)
    monkeypatch.setattr(served.hub.uploads, "write", counter.write)
    return counter


async def assert_plays(served: Served, recording: Recording, data: bytes) -> None:
    assert recording.size_bytes == len(data)
    assert recording.sha256 == hashlib.sha256(data).hexdigest()
    assert recording.content_type == "audio/wav"
    assert recording.duration_seconds is not None and recording.duration_seconds > 0
    detail = await served.api.get(f"/api/v1/calls/{recording.call_id}")
    assert detail.status_code == 200
    assert detail.json()["recording"]["status"] == "ready"
    assert detail.json()["recording"]["size_bytes"] == len(data)
    audio = await served.api.get(f"/api/v1/recordings/{recording.id}/audio")
    assert audio.status_code == 200 and audio.content == data
    part = await served.api.get(
        f"/api/v1/recordings/{recording.id}/audio", headers={"Range": "bytes=100-199"}
    )
    assert part.status_code == 206 and part.content == data[100:200]


async def test_a_recorded_call_is_uploaded_checked_and_plays(
    served: Served, sim: AmiSimulator, tmp_path: Path, counting: CountingUploads
) -> None:
    token = await add_agent_pbx(served.hub)
    async with running(config(served.url, token, sim, tmp_path)) as agent:
        linkedid, path, data = await recorded_call(sim, 30)  # 480 KB: 8 chunks
        assert str(path).startswith(sim.monitor_dir) and path.name == f"{linkedid}.wav"
        recording = await until_status(served, linkedid, str(path), "ready")
        await assert_plays(served, recording, data)
        assert agent.uploader.sent_bytes == len(data) and counting.written == len(data)
        await eventually(lambda: agent.outbox.upload_count() == 0, what="upload row gone")
    # Nothing left behind in the hub's scratch directory.
    assert not list((served.hub.settings.data_dir / "recordings" / ".incoming").glob("*.part"))


async def test_a_cut_mid_upload_resumes_without_resending(
    served: Served, sim: AmiSimulator, tmp_path: Path, counting: CountingUploads
) -> None:
    token = await add_agent_pbx(served.hub)
    proxy = TcpProxy(int(served.url.rsplit(":", 1)[1]))
    await proxy.start()
    # Once the hub has written the 3rd chunk, every connection is cut before the agent hears so.
    counting.hooks[3] = proxy.cut
    try:
        async with running(config(f"http://127.0.0.1:{proxy.port}", token, sim, tmp_path)) as agent:
            linkedid, path, data = await recorded_call(sim, 30)
            recording = await until_status(served, linkedid, str(path), "ready")
            await assert_plays(served, recording, data)
            assert proxy.cuts >= 1
            # The hub told the agent where to go on: no byte was sent twice.
            assert counting.written == len(data)
            assert agent.uploader.sent_bytes == len(data)
    finally:
        await proxy.stop()


async def test_a_corrupted_chunk_is_refused_and_sent_again(
    served: Served, sim: AmiSimulator, tmp_path: Path, counting: CountingUploads
) -> None:
    token = await add_agent_pbx(served.hub)
    async with running(config(served.url, token, sim, tmp_path)) as agent:
        original = agent.uploader._put
        corrupted: list[int] = []

        async def flip_one(
            client: httpx.AsyncClient, url: str, offset: int, data: bytes, query: dict[str, str]
        ) -> httpx.Response:
            if offset == 2 * CHUNK and not corrupted:
                corrupted.append(offset)
                bad = bytes([data[0] ^ 0xFF]) + data[1:]  # one byte changed on the way
                return await client.put(
                    url,
                    params={**query, "offset": str(offset)},
                    content=bad,
                    headers={"X-Chunk-SHA256": hashlib.sha256(data).hexdigest()},
                )
            return await original(client, url, offset, data, query)

        agent.uploader._put = flip_one  # type: ignore[method-assign]
        linkedid, path, data = await recorded_call(sim, 30)
        recording = await until_status(served, linkedid, str(path), "ready")
        await assert_plays(served, recording, data)
        assert corrupted == [2 * CHUNK]
        assert agent.uploader.refused_chunks == 1
        assert counting.written == len(data)  # the corrupt chunk was never appended


async def test_an_agent_restarted_mid_upload_resumes_from_its_outbox(
    served: Served, sim: AmiSimulator, tmp_path: Path, counting: CountingUploads
) -> None:
    token = await add_agent_pbx(served.hub)
    cfg = config(served.url, token, sim, tmp_path)
    stopped = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:  # the 2nd chunk is written; the agent is stopped before it hears so
        stopped.set()
        await release.wait()

    counting.hooks[2] = hold
    agent = Agent(cfg)
    task = asyncio.create_task(agent.run())
    await eventually(lambda: agent.hub_connected and agent.ami.client.connected, what="agent up")
    linkedid, path, data = await recorded_call(sim, 30)
    await asyncio.wait_for(stopped.wait(), 20)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    release.set()
    with sqlite3.connect(cfg.outbox) as db:
        rows = db.execute("SELECT call_id, reference FROM uploads").fetchall()
    assert rows == [(linkedid, str(path))]
    assert (await recording_of(served, linkedid, str(path))).status.value == "pending"  # type: ignore[union-attr]

    async with running(cfg) as again:
        recording = await until_status(served, linkedid, str(path), "ready")
        await assert_plays(served, recording, data)
        assert counting.written == len(data)
        assert again.uploader.sent_bytes == len(data) - 2 * CHUNK  # only what the hub lacked
        await eventually(lambda: again.outbox.upload_count() == 0, what="upload row gone")


async def test_files_outside_the_directory_or_over_the_cap_are_refused_with_a_reason(
    served: Served, sim: AmiSimulator, tmp_path: Path, counting: CountingUploads
) -> None:
    token = await add_agent_pbx(served.hub)
    secret = tmp_path / "elsewhere" / "secret.wav"
    secret.parent.mkdir()
    write_wav(secret, 1)
    # A symbolic link inside the directory that leads outside it is refused too.
    (Path(sim.monitor_dir) / "link.wav").symlink_to(secret)
    async with running(config(served.url, token, sim, tmp_path, recordings_max_bytes=100_000)) as agent:
        outside, path1, _ = await recorded_call(sim, 1, name=str(secret))
        linked, path2, _ = await recorded_call(sim, 1, name="link.wav")
        big, path3, _ = await recorded_call(sim, 10)  # 160 KB > 100 KB
        for linkedid, path in ((outside, path1), (linked, path2)):
            failed = await until_status(served, linkedid, str(path), "failed")
            assert "outside the recordings directory" in failed.reason
        failed = await until_status(served, big, str(path3), "failed")
        assert "over the agent's cap" in failed.reason
        assert counting.written == 0 and agent.uploader.sent_bytes == 0
        await eventually(lambda: agent.outbox.upload_count() == 0, what="upload rows gone")


async def _recording_row(database_url: str, reference: str) -> dict[str, Any] | None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT status, size_bytes, sha256, storage_key, reason"
                        " FROM recordings WHERE reference = :r"
                    ),
                    {"r": reference},
                )
            ).first()
    finally:
        await engine.dispose()
    return dict(row._mapping) if row else None


async def test_a_hub_killed_mid_upload_is_resumed_after_its_restart(
    sim: AmiSimulator, tmp_path: Path, database_url: str
) -> None:
    from tests.agent.procs import HubProcess

    hub = HubProcess(tmp_path / "hub", database_url)
    token = await asyncio.to_thread(hub.add_agent_pbx, "office")
    cfg = config(hub.url, token, sim, tmp_path, upload_chunk_bytes=256 * 1024)
    incoming = tmp_path / "hub" / "recordings" / ".incoming"
    await hub.astart()
    try:
        async with running(cfg) as agent:
            call = await sim.start_call("inbound", record="${UNIQUEID}.wav")
            path = Path(call.channels[0].recording)
            data = write_wav(path, 1500)  # 24 MB: ~94 chunks
            await call.hangup("callee")

            def partial_size() -> int:
                return sum(p.stat().st_size for p in incoming.glob("*.part")) if incoming.is_dir() else 0

            await eventually(lambda: partial_size() >= 1024 * 1024, limit=30, what="upload under way")
            await asyncio.to_thread(hub.kill)  # SIGKILL mid-upload
            held = partial_size()
            assert 0 < held < len(data)
            sent_before = agent.uploader.sent_bytes
            await hub.astart()
            found: list[dict[str, Any]] = []

            async def ready() -> bool:
                row = await _recording_row(database_url, str(path))
                if row and row["status"] == "ready":
                    found.append(row)
                return bool(found)

            await eventually(ready, limit=60, what="recording ready after the restart")
            row = found[0]
            assert row["size_bytes"] == len(data) and row["sha256"] == hashlib.sha256(data).hexdigest()
            assert (tmp_path / "hub" / "recordings" / row["storage_key"]).read_bytes() == data
            # Resumed from what the hub held: at most the chunk in flight at the kill is sent twice.
            resent = agent.uploader.sent_bytes - len(data)
            assert 0 <= resent <= 256 * 1024, (sent_before, held, agent.uploader.sent_bytes)
            assert agent.uploader.sent_bytes - sent_before <= len(data) - held + 256 * 1024
    finally:
        hub.stop()


async def test_the_upload_endpoints_refuse_bad_input_and_other_agents(
    served: Served, sim: AmiSimulator, tmp_path: Path
) -> None:
    """A forged token, another PBX's agent, a wrong offset, a chunk past the end, a whole file
    that does not match: each a clear 4xx, none a recording."""
    from sqlalchemy import text

    from callbridge.domain.pbx import PbxKind
    from callbridge.services.agents import issue_token
    from callbridge.services.pbxes import AsteriskSettings, add_pbx

    token = await add_agent_pbx(served.hub)
    async with served.hub.db.unit() as repos:
        await add_pbx(
            repos.pbxes, "branch", PbxKind.ASTERISK, AsteriskSettings(trunks=("trunk*",), agent=True)
        )
        other = await issue_token(repos.agents, "branch")
    # The call is recorded, but this agent may not read the file (outside its directory): the
    # test uploads it by hand instead.
    async with running(config(served.url, token, sim, tmp_path, recordings_dir=tmp_path / "none")):
        linkedid, path, data = await recorded_call(sim, 2)
        await until_status(served, linkedid, str(path), "failed")
    async with served.hub.db.unit() as repos:
        await repos.session.execute(text("UPDATE recordings SET status = 'pending', reason = ''"))
    sha = hashlib.sha256(data).hexdigest()
    announce = {"call_id": linkedid, "reference": str(path), "size": len(data), "sha256": sha}
    async with httpx.AsyncClient(base_url=served.url) as http:
        forged = await http.post(
            "/agent/v1/recordings", json=announce, headers={"authorization": "Bearer cbagent_x"}
        )
        assert forged.status_code == 401 and forged.json()["error"]["code"] == "authentication_failed"
        mine = {"authorization": f"Bearer {token}"}
        theirs = {"authorization": f"Bearer {other}"}
        assert (await http.post("/agent/v1/recordings", json=announce, headers=theirs)).status_code == 404
        bad = await http.post("/agent/v1/recordings", json={**announce, "sha256": "z" * 64}, headers=mine)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_input"
        begun = await http.post("/agent/v1/recordings", json=announce, headers=mine)
        assert begun.status_code == 200 and begun.json()["offset"] == 0
        rid = begun.json()["recording_id"]
        query = {"size": str(len(data)), "sha256": sha}

        async def put(offset: int, chunk: bytes, who: dict[str, str] = mine) -> httpx.Response:
            return await http.put(
                f"/agent/v1/recordings/{rid}/data",
                params={**query, "offset": str(offset)},
                content=chunk,
                headers={**who, "X-Chunk-SHA256": hashlib.sha256(chunk).hexdigest()},
            )

        assert (await put(0, data[:1000], theirs)).status_code == 404  # not its PBX's recording
        assert (await put(0, data[:1000])).json() == {"offset": 1000}
        wrong = await put(5000, data[5000:6000])
        assert wrong.status_code == 409 and wrong.json()["error"]["details"] == {"offset": 1000}
        assert (await put(1000, data[1000:] + b"extra")).status_code == 400  # past the announced size
        # The rest, each chunk checked, but not the announced file.
        assert (await put(1000, b"\0" * (len(data) - 1000))).status_code == 200
        mismatch = await http.post(f"/agent/v1/recordings/{rid}/complete", params=query, headers=mine)
        assert mismatch.status_code == 422 and mismatch.json()["error"]["code"] == "checksum_mismatch"
        again = await http.post("/agent/v1/recordings", json=announce, headers=mine)
        assert again.json()["offset"] == 0  # the mismatching partial file was dropped
        rec = await recording_of(served, linkedid, str(path))
        assert rec is not None and rec.status.value == "pending" and rec.storage_key == ""
        assert (await put(0, b"x" * (2 * 1024 * 1024))).status_code == 413  # the hub's body limit


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (scripts/test.sh installs it)")
async def test_an_uploaded_recording_is_transcoded_keeping_the_originals_checksum_and_duration(
    served: Served, sim: AmiSimulator, tmp_path: Path
) -> None:
    assert served.hub.uploads is not None
    served.hub.uploads.transcode = Transcoder("opus")  # CALLBRIDGE_RECORDINGS_TRANSCODE=opus
    token = await add_agent_pbx(served.hub)
    async with running(config(served.url, token, sim, tmp_path)):
        linkedid, path, data = await recorded_call(sim, 4)
        recording = await until_status(served, linkedid, str(path), "ready")
    assert recording.sha256 == hashlib.sha256(data).hexdigest()  # the original's
    assert recording.duration_seconds == 4.0  # the original's
    assert recording.content_type == "audio/ogg" and recording.storage_key.endswith(".opus")
    stored = served.hub.settings.data_dir / "recordings" / recording.storage_key
    assert recording.size_bytes == stored.stat().st_size < len(data) / 4
    audio = await served.api.get(f"/api/v1/recordings/{recording.id}/audio")
    assert audio.status_code == 200 and audio.content == stored.read_bytes()
    assert audio.headers["content-type"] == "audio/ogg" and audio.content.startswith(b"OggS")
    # Neither the partial upload nor the converted file is left behind.
    assert not [p for p in (served.hub.settings.data_dir / "recordings" / ".incoming").iterdir()]
