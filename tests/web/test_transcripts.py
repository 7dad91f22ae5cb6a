"""Transcription on the hub: real speech (espeak-ng) → a stored recording → the opt-in worker
with the packaged Whisper tiny.en model → a timed transcript in the API, on the call page, in the
call log's search (for those who may see the call only) and from the CLI; nothing reaches out."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import FAST_HASHER, add_user, api_token
from tests.test_cli import run
from tests.web.test_recording_use import client_for
from tests.web.test_recordings_api import recorded_call, setup_world, tone_wav

from callbridge.config import Settings
from callbridge.domain.transcripts import Segment, TranscribeRules
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.recordings import FetchPolicy, digest
from callbridge.services.transcription import (
    Heard,
    Summarizer,
    TranscriptionUnavailable,
    WhisperTranscriber,
    transcribe_recording,
)

FAST = FetchPolicy(base_delay=0.05, max_delay=0.2, no_source_delay=0.2, max_attempts=3)
SENTENCE = "Hello, this is a test call about the invoice. Please send the payment by Friday."
# What tiny.en reliably hears in espeak-ng's voice (it is deterministic on the CPU, greedy).
WORDS = ("hello", "test call", "payment", "friday")

# A WAV header whose chunks run past the end of the file.
CORRUPT_WAV = b"RIFF\x10\x00\x00\x00WAVEnot really audio at all" * 20

# One model for the module (loading it costs about half a second of CPU).
TRANSCRIBER = WhisperTranscriber()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """About six seconds of two known sentences, spoken by espeak-ng (150 words a minute), as a WAV."""
    espeak = shutil.which("espeak-ng")
    assert espeak, "the tests need espeak-ng (Debian package; scripts/test.sh installs it)"
    out = tmp_path_factory.mktemp("speech") / "sentence.wav"
    subprocess.run(
        [espeak, "-s", "150", "-w", str(out), SENTENCE], check=True, capture_output=True, timeout=60
    )
    return out.read_bytes()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Opt in; the background round at start finds nothing, the test runs the worker's rounds.
    return settings.model_copy(update={"transcribe": True, "transcribe_interval_seconds": 3600.0})


@pytest.fixture
def monitor(tmp_path: Path) -> Path:
    path = tmp_path / "spool" / "monitor"
    path.mkdir(parents=True)
    return path


@pytest.fixture
async def clients(app: object, hub: Hub, monitor: Path) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """bob (agent, takes the calls), dave (agent, owns nothing), carol (manager)."""
    assert hub.fetcher is not None and hub.transcription is not None
    hub.fetcher.policy = FAST
    hub.transcription.transcriber = TRANSCRIBER
    await setup_world(hub, monitor)
    await add_user(hub, "carol", Role.MANAGER)
    out = {name: client_for(app, await api_token(hub, name)) for name in ("bob", "dave", "carol")}
    yield out
    for c in out.values():
        await c.aclose()


async def stored(hub: Hub, monitor: Path, call_id: str, minute: int, audio: bytes) -> int:
    """A call of bob's whose recording (``audio``) is fetched and stored; its row id."""
    file = monitor / f"{call_id}.wav"
    file.write_bytes(audio)
    call = await recorded_call(hub, call_id, minute, str(file))
    assert hub.fetcher is not None
    async with asyncio.timeout(10):
        while True:  # the app's own fetcher may be taking it (woken by the event): wait for it
            await hub.fetcher.run_once()
            async with hub.db.unit() as repos:
                [rec] = await repos.recordings.for_call(call)
            if rec.status.value == "ready":
                return call
            await asyncio.sleep(0.05)


async def ids(client: httpx.AsyncClient, q: str) -> set[int]:
    answer = await client.get("/api/v1/calls", params={"q": q})
    assert answer.status_code == 200, answer.text
    return {c["id"] for c in answer.json()["items"]}


async def test_the_worker_transcribes_speech_with_times_searchable_by_those_who_see_the_call(
    clients: dict[str, httpx.AsyncClient], hub: Hub, monitor: Path, speech: bytes
) -> None:
    bob, dave, carol = clients["bob"], clients["dave"], clients["carol"]
    call = await stored(hub, monitor, "s1", 0, speech)
    other = await stored(hub, monitor, "s2", 5, tone_wav(0.5))
    assert (await bob.get(f"/api/v1/calls/{call}")).json()["transcript"] is None
    assert hub.transcription is not None

    # Rules choose the calls: another PBX's calls only → nothing here is transcribed.
    hub.transcription.rules = TranscribeRules.parse(pbxes="elsewhere")
    assert await hub.transcription.run_once() == 0
    hub.transcription.rules = TranscribeRules()
    hub.transcription._skipped.clear()
    assert await hub.transcription.run_once() == 2
    assert await hub.transcription.run_once() == 0  # done once, not again

    transcript = (await bob.get(f"/api/v1/calls/{call}")).json()["transcript"]
    assert set(transcript) == {"status", "language", "text", "segments", "reason", "summary"}
    assert transcript["summary"] is None  # no summary endpoint: none
    assert transcript["status"] == "ready" and transcript["language"] == "en"
    assert transcript["reason"] is None
    text = transcript["text"].casefold()
    for word in WORDS:
        assert word in text, (word, transcript["text"])
    segments = transcript["segments"]
    assert len(segments) >= 2
    assert all(set(s) == {"start", "end", "text"} and s["text"] for s in segments)
    assert all(s["start"] < s["end"] for s in segments)
    assert all(a["end"] <= b["start"] and a["start"] < b["start"] for a, b in itertools.pairwise(segments))
    assert segments[-1]["end"] <= 8.0  # the speech is about six seconds long
    assert transcript["text"] == " ".join(s["text"] for s in segments)

    # The call log's search box finds words said in the call, case aside.
    assert call in await ids(carol, "PAYMENT") and other not in await ids(carol, "payment")
    assert call in await ids(bob, "friday")
    assert call not in await ids(dave, "payment")  # an agent who owns nothing: not even by its words
    assert await ids(dave, "friday") == set()
    assert (await dave.get(f"/api/v1/calls/{call}")).status_code == 404

    # On the call page each line is a button that seeks the player to its start.
    page = (await bob.get(f"/calls/{call}", headers={"accept": "text/html"})).text
    first = segments[0]
    assert f'data-seek="{segments[1]["start"]}"' in page
    assert f'class="link transcript-line" data-seek="{first["start"]}"' in page
    assert first["text"] in page and "<script>" not in page.split('id="transcript"')[1].split("</div>")[0]


async def test_audio_the_transcriber_cannot_read_fails_with_the_reason_once(
    clients: dict[str, httpx.AsyncClient], hub: Hub, monitor: Path
) -> None:
    call = await stored(hub, monitor, "bad", 0, CORRUPT_WAV)
    assert hub.transcription is not None
    assert await hub.transcription.run_once() == 1
    transcript = (await clients["bob"].get(f"/api/v1/calls/{call}")).json()["transcript"]
    assert transcript["status"] == "failed" and transcript["segments"] == [] and transcript["text"] == ""
    assert transcript["reason"].startswith("the audio could not be transcribed")
    assert await hub.transcription.run_once() == 0  # never retried
    page = (await clients["bob"].get(f"/calls/{call}", headers={"accept": "text/html"})).text
    assert "Transcript unavailable: the audio could not be transcribed" in page


def test_the_model_loads_from_the_package_with_no_network(
    speech: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("the network is not for the transcriber")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    wav = tmp_path / "s.wav"
    wav.write_bytes(speech)
    fresh = WhisperTranscriber()  # loads the model again, inside this test
    assert fresh.model_dir.name == "model" and (fresh.model_dir / "model.bin").is_file()
    heard = fresh.transcribe(wav)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert attempts == []
    assert "payment" in " ".join(s.text for s in heard.segments).casefold()


def test_a_corrupt_wav_is_stored_with_an_unknown_duration(tmp_path: Path) -> None:
    # The wave module raised a bare RuntimeError here: the fetch never finished, the recording
    # stayed pending (claimed again every 15 minutes) and the fetcher's batch stopped.
    file = tmp_path / "bad.wav"
    file.write_bytes(CORRUPT_WAV)
    found = digest(file)
    assert found.size == len(CORRUPT_WAV) and found.duration_seconds is None


def test_a_model_directory_without_a_model_is_refused_clearly(tmp_path: Path) -> None:
    missing = WhisperTranscriber(tmp_path / "no-model")
    with pytest.raises(TranscriptionUnavailable, match=r"no CTranslate2 Whisper model in .*no-model"):
        missing.transcribe(tmp_path / "x.wav")


def test_rules_choose_calls_by_number_direction_and_pbx() -> None:
    rules = TranscribeRules.parse(numbers="+4930*, 1002", directions="Inbound", pbxes="main")
    assert rules.matches(direction="inbound", pbx="main", numbers=["+493012345"])
    assert rules.matches(direction="inbound", pbx="main", numbers=["+15550100", "1002"])
    assert not rules.matches(direction="outbound", pbx="main", numbers=["+493012345"])
    assert not rules.matches(direction="inbound", pbx="other", numbers=["+493012345"])
    assert not rules.matches(direction="inbound", pbx="main", numbers=["+4940123", ""])
    assert TranscribeRules().matches(direction="", pbx="x", numbers=[])
    with pytest.raises(ValueError, match="unknown direction 'sideways'"):
        Settings(transcribe_directions="inbound, sideways")


async def _cli_world(data_dir: Path, speech: bytes) -> tuple[int, int]:
    hub = Hub.build(Settings(data_dir=data_dir, start_pbx_links=False), hasher=FAST_HASHER)
    await hub.prepare()
    monitor = data_dir / "monitor"
    monitor.mkdir()
    await setup_world(hub, monitor)
    call = await stored(hub, monitor, "cli1", 0, speech)
    bare = await recorded_call(hub, "cli2", 5, str(monitor / "never-written.wav"))
    await hub.close()
    return call, bare


def test_cli_transcribes_one_call_now_and_prints_the_text(tmp_path: Path, speech: bytes) -> None:
    call, bare = asyncio.run(_cli_world(tmp_path, speech))  # transcription is not opted in here
    out = run(tmp_path, "recordings", "transcribe", str(call)).stdout.casefold()
    for word in WORDS:
        assert word in out, (word, out)

    async def stored_text() -> Any:
        hub = Hub.build(Settings(data_dir=tmp_path, start_pbx_links=False))
        async with hub.db.unit() as repos:
            found = await repos.transcripts.for_call(call)
        await hub.close()
        return found

    found = asyncio.run(stored_text())
    assert found is not None and found.status.value == "ready" and "payment" in found.text.casefold()
    refused = run(tmp_path, "recordings", "transcribe", str(bare), check=False)
    assert refused.returncode == 1 and f"call {bare} has no stored recording" in refused.stderr


class Heard2:
    """A transcriber that hears two known lines (the summary path needs no model)."""

    name = "fixed"

    def transcribe(self, path: Path) -> Heard:
        assert path.is_file()
        return Heard("en", (Segment(0.0, 1.5, "Please send the invoice."), Segment(1.5, 3.0, "By Friday.")))


def llm(status: int, seen: list[dict[str, Any]]) -> Any:
    """A tiny OpenAI-compatible chat endpoint (an ASGI app) that records what it was sent."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        seen.append({"path": scope["path"], "auth": headers.get("authorization"), "json": json.loads(body)})
        answer = {
            "choices": [
                {"message": {"role": "assistant", "content": " The caller wants the invoice by Friday. "}}
            ]
        }
        payload = json.dumps(answer if status == 200 else {"error": "down"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


async def test_a_configured_summary_endpoint_gets_the_text_and_its_summary_is_kept(
    clients: dict[str, httpx.AsyncClient], hub: Hub, monitor: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert hub.storage is not None
    good = await stored(hub, monitor, "sum1", 0, tone_wav(0.5))
    bad = await stored(hub, monitor, "sum2", 5, tone_wav(0.5))
    seen: list[dict[str, Any]] = []
    for call, status in ((good, 200), (bad, 503)):
        summarizer = Summarizer(
            "http://llm.test/v1/",
            "tiny-llm",
            "sk-secret-key",
            transport=httpx.ASGITransport(app=llm(status, seen)),
        )
        async with hub.db.unit() as repos:
            [rec] = await repos.recordings.for_call(call)
        outcome = await transcribe_recording(rec, hub.storage, Heard2(), hub._transcript_rows, summarizer)
        assert outcome[0].value == "ready"

    assert [s["path"] for s in seen] == ["/v1/chat/completions"] * 2
    assert seen[0]["auth"] == "Bearer sk-secret-key" and seen[0]["json"]["model"] == "tiny-llm"
    assert seen[0]["json"]["messages"][-1] == {
        "role": "user",
        "content": "Please send the invoice. By Friday.",
    }
    first = (await clients["bob"].get(f"/api/v1/calls/{good}")).json()["transcript"]
    assert first["summary"] == "The caller wants the invoice by Friday."
    page = (await clients["bob"].get(f"/calls/{good}", headers={"accept": "text/html"})).text
    assert "The caller wants the invoice by Friday." in page
    # An endpoint that fails leaves the transcript without a summary, and the key out of the log.
    second = (await clients["bob"].get(f"/api/v1/calls/{bad}")).json()["transcript"]
    assert second["status"] == "ready" and second["summary"] is None
    assert "no summary (the summary endpoint failed: HTTPStatusError)" in caplog.text
    assert "sk-secret-key" not in caplog.text


def test_summaries_are_off_by_default_and_need_an_http_url() -> None:
    from callbridge.hub import summarizer_for

    assert summarizer_for(Settings()) is None
    assert Settings().transcribe is False
    with pytest.raises(ValueError, match="must be an http"):
        Settings(summary_url="file:///etc/passwd")
