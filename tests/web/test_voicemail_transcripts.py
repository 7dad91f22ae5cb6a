"""Voicemail transcripts: where transcription is on, a voicemail's stored audio (real speech from
espeak-ng, uploaded by the agent) is transcribed by the recordings' worker with the packaged
Whisper tiny.en model, by the same rules, and the transcript shows in the API (``transcript`` as
a call's) and on the inbox page, to those who may see the voicemail only."""

from __future__ import annotations

import hashlib
import html

import httpx
import pytest
from tests.conftest import sign_in
from tests.web import test_transcripts as transcripts
from tests.web import test_voicemails_api as voicemail_api
from tests.web.test_voicemails_api import World, message

from callbridge.config import Settings
from callbridge.domain.transcripts import TranscribeRules
from callbridge.hub import Hub
from callbridge.services.transcription import TranscriptionWorker

world = voicemail_api.world
speech = transcripts.speech


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Opt in; the background round at start finds nothing, the test runs the worker's rounds.
    return settings.model_copy(update={"transcribe": True, "transcribe_interval_seconds": 3600.0})


async def upload(agent: httpx.AsyncClient, audio: bytes, n: int) -> int:
    """Voicemail number ``n`` in mailbox 7001, its audio uploaded in one chunk; its id."""
    sha = hashlib.sha256(audio).hexdigest()
    reference = f"default/7001/1700000000-{n:08d}"
    begun = await agent.post(
        "/agent/v1/voicemails", json=message(reference=reference, size=len(audio), sha256=sha)
    )
    assert begun.status_code == 200, begun.text
    vm_id = int(begun.json()["voicemail_id"])
    query = {"size": str(len(audio)), "sha256": sha}
    sent = await agent.put(
        f"/agent/v1/voicemails/{vm_id}/data",
        params={**query, "offset": "0"},
        content=audio,
        headers={"X-Chunk-SHA256": sha},
    )
    assert sent.status_code == 200, sent.text
    done = await agent.post(f"/agent/v1/voicemails/{vm_id}/complete", params=query)
    assert done.status_code == 200 and done.json()["status"] == "ready", done.text
    return vm_id


async def test_a_voicemail_is_transcribed_and_its_transcript_shows_to_its_mailboxs_user(
    world: World, hub: Hub, app: object, speech: bytes
) -> None:
    assert hub.transcription is not None
    hub.transcription.transcriber = transcripts.TRANSCRIBER
    async with world.client("agent") as agent, world.client("bob") as bob, world.client("dave") as dave:
        spoken = await upload(agent, speech, 1)
        broken = await upload(agent, transcripts.CORRUPT_WAV, 2)
        assert (await bob.get(f"/api/v1/voicemails/{spoken}")).json()["transcript"] is None

        # Rules that leave this PBX out: the worker transcribes nothing.
        other = TranscriptionWorker(
            hub._transcript_rows,
            hub.storage,  # type: ignore[arg-type]
            transcripts.TRANSCRIBER,
            TranscribeRules.parse(pbxes="elsewhere"),
            voicemail_units=hub._voicemail_transcript_rows,
        )
        assert await other.run_once() == 0
        assert (await bob.get(f"/api/v1/voicemails/{spoken}")).json()["transcript"] is None

        assert await hub.transcription.run_once() == 2
        item = (await bob.get(f"/api/v1/voicemails/{spoken}")).json()
        transcript = item["transcript"]
        assert transcript["status"] == "ready" and transcript["language"] == "en"
        text = transcript["text"].lower()
        for word in transcripts.WORDS:
            assert word in text, (word, text)
        segments = transcript["segments"]
        assert segments and all(0 <= s["start"] < s["end"] for s in segments)
        assert segments[-1]["end"] <= 8.0  # about six seconds of speech
        assert transcript["reason"] is None and transcript["summary"] is None
        # Audio the transcriber cannot read: failed, with the reason; not tried again.
        failed = (await bob.get(f"/api/v1/voicemails/{broken}")).json()["transcript"]
        assert failed["status"] == "failed" and failed["text"] == "" and failed["segments"] == []
        assert failed["reason"].startswith("the audio could not be transcribed")
        assert await hub.transcription.run_once() == 0
        # In the list too; to nobody who may not see the voicemail.
        listed = {i["id"]: i for i in (await bob.get("/api/v1/voicemails")).json()["items"]}
        assert listed[spoken]["transcript"] == transcript
        assert (await dave.get("/api/v1/voicemails")).json()["items"] == []
        assert (await dave.get(f"/api/v1/voicemails/{spoken}")).status_code == 404

    # The inbox page shows it under the player.
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as browser:
        await sign_in(browser)  # the admin sees every mailbox
        page = await browser.get("/voicemails", headers={"accept": "text/html"})
    assert page.status_code == 200
    body = html.unescape(page.text)
    assert f'data-voicemail-transcript="{spoken}"' in page.text
    assert transcript["text"] in body
    assert "No transcript: the audio could not be transcribed" in body
