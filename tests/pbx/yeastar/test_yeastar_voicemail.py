"""Yeastar voicemail end to end: the simulator's call goes to voicemail (CDR status
``VOICEMAIL``), the hub makes a voicemail in the called extension's mailbox and fetches its
audio through the OpenAPI (``vm/get`` to find the message, ``vm/download`` for a one-time path,
the file with the access token; retried with back-off while the PBX does not list it or
refuses), and serves it itself. The mailbox's user hears it and has its task; an agent who owns
nothing sees nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import httpx
from tests.conftest import add_user, api_token
from tests.pbx.yeastar import test_yeastar_hub as end_to_end
from tests.pbx.yeastar.test_yeastar_hub import CALLER, Setup
from tests.web.test_recordings_api import tone_wav

from callbridge.domain.users import Role
from callbridge.domain.voicemails import AudioStatus, Voicemail
from callbridge.hub import Hub
from callbridge.pbx.yeastar.client import VoicemailMessage
from callbridge.pbx.yeastar.voicemails import pick_message, same_caller
from callbridge.services.recordings import FetchPolicy

# The end-to-end fixtures: the hub served over HTTP, a PBX added, the simulator sending webhooks.
hub_socket = end_to_end.hub_socket
settings = end_to_end.settings
hub_url = end_to_end.hub_url
webhooks = end_to_end.webhooks

FAST = FetchPolicy(base_delay=0.05, max_delay=0.2, no_source_delay=0.2, max_attempts=6)


async def _people(setup: Setup) -> dict[str, httpx.AsyncClient]:
    bob = await add_user(setup.hub, "bob", Role.AGENT)
    await add_user(setup.hub, "dave", Role.AGENT)  # owns nothing
    async with setup.hub.db.unit() as repos:
        await repos.extensions.map("cloud", "2002", bob.id)
    out = {}
    for name in ("bob", "dave"):
        headers = {"authorization": f"Bearer {await api_token(setup.hub, name)}"}
        out[name] = httpx.AsyncClient(base_url=str(setup.api.base_url), headers=headers, timeout=10.0)
    return out


async def _until(api: httpx.AsyncClient, status: str, within: float = 20.0) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:  # the API is what is under test: poll it briefly
            answer = await api.get("/api/v1/voicemails")
            assert answer.status_code == 200, answer.text
            items = answer.json()["items"]
            if items and items[0]["audio_status"] == status:
                return dict(items[0])
            await asyncio.sleep(0.05)


async def test_a_yeastar_voicemail_reaches_the_mailboxs_inbox_with_its_audio(webhooks: Setup) -> None:
    hub, sim = webhooks.hub, webhooks.sim
    assert hub.voicemail_fetcher is not None
    hub.voicemail_fetcher.policy = FAST
    people = await _people(webhooks)
    audio = tone_wav(2.0)
    sim.vm_hidden_lists = 2  # the PBX lists the message only after the CDR: looked for again
    sim.fail_downloads = 1  # and refuses one download (HTTP 503): fetched again
    try:
        call_id = await sim.run_scenario("inbound_voicemail", caller=CALLER, extension="2002", audio=audio,
                                         message_seconds=2)  # fmt: skip
        call = await webhooks.call(call_id)
        assert call["disposition"] == "voicemail"
        bob, dave = people["bob"], people["dave"]
        item = await _until(bob, "ready")
        assert item["pbx"] == "cloud" and item["mailbox"] == "2002"
        assert item["caller_number"] == CALLER and item["call_id"] == call["id"]
        assert item["duration_seconds"] == 2 and item["status"] == "new"
        text = json.dumps(item)
        assert sim.base_url not in text and "access_token" not in text and "download" not in text
        assert item["audio_url"] == f"/api/v1/voicemails/{item['id']}/audio"
        whole = await bob.get(item["audio_url"])
        assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav"
        assert hashlib.sha256(whole.content).digest() == hashlib.sha256(audio).digest()
        part = await bob.get(item["audio_url"], headers={"range": "bytes=0-43"})
        assert part.status_code == 206 and part.content == audio[:44]
        assert sim.downloads == 2  # one refused, then the file
        # The webhooks came twice (the simulator duplicates them): still one voicemail, one task.
        [task] = [t for t in (await bob.get("/api/v1/tasks")).json()["items"] if t["kind"] == "voicemail"]
        assert task["number"] == CALLER
        assert len((await bob.get("/api/v1/voicemails")).json()["items"]) == 1
        # Dave owns nothing: he sees none of it.
        assert (await dave.get("/api/v1/voicemails")).json()["items"] == []
        assert (await dave.get(f"/api/v1/voicemails/{item['id']}")).status_code == 404
        assert (await dave.get(item["audio_url"])).status_code == 404
    finally:
        for client in people.values():
            await client.aclose()


async def test_a_message_the_pbx_never_lists_leaves_the_audio_failed_with_the_reason(
    webhooks: Setup,
) -> None:
    hub, sim = webhooks.hub, webhooks.sim
    assert hub.voicemail_fetcher is not None
    hub.voicemail_fetcher.policy = FetchPolicy(base_delay=0.02, max_delay=0.05, max_attempts=3)
    people = await _people(webhooks)
    try:
        sim.vm_hidden_lists = 1000
        await sim.run_scenario("inbound_voicemail", caller=CALLER, extension="2002")
        pending = await _until(people["bob"], "pending")
        assert pending["audio_url"] is None and pending["audio_reason"]
        failed = await _until(people["bob"], "failed")
        assert failed["audio_reason"].startswith("gave up after 3 attempts: mailbox 2002")
        assert (await people["bob"].get(f"/api/v1/voicemails/{failed['id']}/audio")).status_code == 404
    finally:
        for client in people.values():
            await client.aclose()


def _message(msg_id: str, number: str, time: str = "") -> VoicemailMessage:
    return VoicemailMessage(msg_id, "msg0000.wav", False, 3, 100, "", number, time)


def test_the_message_is_the_callers_untaken_one_nearest_the_call() -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    assert same_caller("+14155550100", "+14155550100")
    assert same_caller("0014155550100", "+14155550100")  # an international prefix
    assert same_caller("4155550100", "+14155550100")  # a national form
    assert same_caller("2005", "2005")
    assert not same_caller("2005", "+14155552005")  # too few digits to say
    assert not same_caller("+14155550199", "+14155550100")
    left = datetime(2026, 12, 6, 10, 0, 30, tzinfo=UTC)
    voicemail = Voicemail(
        id=1, pbx="cloud", mailbox="2002", reference="call:1", caller_number="+14155550100",
        caller_name="", contact_id=None, received_at=left, duration_seconds=0, heard=False,
        call_id=None, audio_status=AudioStatus.PENDING, audio_reason="", storage_key="",
        size_bytes=None, sha256="", content_type="", created_at=left,
    )  # fmt: skip
    zone = ZoneInfo("Europe/Berlin")  # the PBX writes local time
    messages = [
        _message("a", "+14155550100", "2026-12-06 10:00:25"),  # an hour off in UTC
        _message("b", "+14155550199", "2026-12-06 11:00:29"),  # another caller
        _message("c", "+14155550100", "2026-12-06 11:00:28"),  # two seconds off: this one
        _message("d", "+14155550100", "2026-12-06 11:00:40"),
    ]
    picked = pick_message(messages, voicemail, set(), zone)
    assert picked is not None and picked.msg_id == "c"
    picked = pick_message(messages, voicemail, {"c"}, zone)  # taken by another voicemail
    assert picked is not None and picked.msg_id == "d"
    assert pick_message(messages, voicemail, {"a", "c", "d"}, zone) is None
    unreadable = [_message("x", "+14155550100", "later"), _message("y", "+14155550100", "")]
    picked = pick_message(unreadable, voicemail, set(), zone)
    assert picked is not None and picked.msg_id == "x"  # the PBX's order: the oldest


async def test_a_voicemail_event_for_a_pbx_that_is_not_yeastar_makes_no_voicemail(hub: Hub) -> None:
    """Asterisk's messages come from its agent with their audio; the same event from elsewhere
    (an agent's batch) is dropped, not turned into a voicemail the hub would try to fetch."""
    from datetime import UTC, datetime

    from tests.agent.conftest import add_agent_pbx

    from callbridge.domain.events import VoicemailLeft

    await add_agent_pbx(hub, "office")
    at = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    for pbx in ("office", "nowhere"):
        await hub.handle_events(
            [VoicemailLeft(pbx=pbx, at=at, call_id="c1", mailbox="7001", caller_number=CALLER)]
        )
    async with hub.db.unit() as repos:
        found, _ = await repos.voicemails.search(mailboxes=None)
        assert found == [] and await repos.voicemails.next_due_at() is None
