"""Voicemails through the API: an agent announces a message and uploads its audio in checked
chunks; the mailbox's user lists it (with the caller's contact), plays it with Range, marks it
heard and deletes it. Another agent who owns nothing sees nothing; managers see every mailbox."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tests.agent.conftest import add_agent_pbx
from tests.conftest import add_user, api_token
from tests.web.test_recordings_api import tone_wav

from callbridge.domain.directory import ContactKind, Phone
from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallRinging,
    CallStarted,
    Direction,
    Disposition,
)
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.directory import ContactInput

ADA = "+14155550100"
REFERENCE = "/var/spool/asterisk/voicemail/default/7001/INBOX/msg0000.txt"


def message(**extra: Any) -> dict[str, Any]:
    return {
        "mailbox": "7001@default",
        "reference": REFERENCE,
        "caller_number": ADA,
        "caller_name": "Ada",
        "received_at": "2026-12-06T10:12:40+00:00",
        "duration_seconds": 7,
        **extra,
    }


class World:
    def __init__(self, transport: httpx.ASGITransport, tokens: dict[str, str]) -> None:
        self.transport = transport
        self.tokens = tokens

    def client(self, who: str) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {self.tokens[who]}"}
        return httpx.AsyncClient(transport=self.transport, base_url="http://testserver", headers=headers)


@pytest.fixture
async def world(app: object, hub: Hub) -> AsyncIterator[World]:
    agent_token = await add_agent_pbx(hub, "office")
    bob = await add_user(hub, "bob", Role.AGENT)
    await add_user(hub, "dave", Role.AGENT)  # owns nothing
    await add_user(hub, "mia", Role.MANAGER)
    async with hub.db.unit() as repos:
        await repos.extensions.map("office", "7001", bob.id)
        await repos.directory.create(
            ContactInput(kind=ContactKind.PERSON, name="Ada Lovelace", phones=(Phone("(415) 555-0100", ADA),))
        )
    tokens = {"agent": agent_token}
    for name in ("bob", "dave", "mia"):
        tokens[name] = await api_token(hub, name)
    yield World(httpx.ASGITransport(app=app), tokens)  # type: ignore[arg-type]


async def upload(agent: httpx.AsyncClient, audio: bytes, chunk: int = 4096) -> int:
    sha = hashlib.sha256(audio).hexdigest()
    begun = await agent.post("/agent/v1/voicemails", json=message(size=len(audio), sha256=sha))
    assert begun.status_code == 200, begun.text
    state = begun.json()
    assert state["status"] == "uploading"
    vm_id, offset = int(state["voicemail_id"]), int(state["offset"])
    query = {"size": str(len(audio)), "sha256": sha}
    while offset < len(audio):
        data = audio[offset : offset + chunk]
        sent = await agent.put(
            f"/agent/v1/voicemails/{vm_id}/data",
            params={**query, "offset": str(offset)},
            content=data,
            headers={"X-Chunk-SHA256": hashlib.sha256(data).hexdigest()},
        )
        assert sent.status_code == 200, sent.text
        offset = int(sent.json()["offset"])
    done = await agent.post(f"/agent/v1/voicemails/{vm_id}/complete", params=query)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "ready"
    return vm_id


async def test_a_voicemail_arrives_plays_with_ranges_and_is_marked_heard(world: World) -> None:
    audio = tone_wav(1.0)
    async with world.client("agent") as agent, world.client("bob") as bob:
        # The message first, without its audio: pending, with the reason.
        first = await agent.post("/agent/v1/voicemails", json=message())
        assert first.status_code == 200, first.text
        assert first.json()["created"] is True and first.json()["status"] == "waiting"
        page = (await bob.get("/api/v1/voicemails")).json()
        [item] = page["items"]
        assert page["next"] is None
        assert item["mailbox"] == "7001@default" and item["caller_number"] == ADA
        assert item["contact"] == {"id": item["contact"]["id"], "name": "Ada Lovelace", "company": None}
        assert item["status"] == "new" and item["heard"] is False and item["duration_seconds"] == 7
        assert item["audio_status"] == "pending" and item["audio_url"] is None
        assert "waiting for the agent" in item["audio_reason"]
        missing = await bob.get(f"/api/v1/voicemails/{item['id']}/audio")
        assert missing.status_code == 404 and "waiting for the agent" in missing.json()["error"]["message"]

        vm_id = await upload(agent, audio)
        assert vm_id == item["id"]  # the same message, announced again: one voicemail
        again = await agent.post(
            "/agent/v1/voicemails", json=message(size=len(audio), sha256=hashlib.sha256(audio).hexdigest())
        )
        assert again.json()["status"] == "ready" and again.json()["created"] is False

        [item] = (await bob.get("/api/v1/voicemails")).json()["items"]
        assert item["audio_status"] == "ready" and item["audio_reason"] is None
        whole = await bob.get(item["audio_url"])
        assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav"
        assert hashlib.sha256(whole.content).hexdigest() == hashlib.sha256(audio).hexdigest()
        part = await bob.get(item["audio_url"], headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == audio[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(audio)}"
        past = await bob.get(item["audio_url"], headers={"Range": f"bytes={len(audio)}-"})
        assert past.status_code == 416

        heard = await bob.patch(f"/api/v1/voicemails/{vm_id}", json={"heard": True})
        assert heard.status_code == 200 and heard.json()["status"] == "heard"
        assert (await bob.get("/api/v1/voicemails", params={"status": "new"})).json()["items"] == []
        assert len((await bob.get("/api/v1/voicemails", params={"status": "heard"})).json()["items"]) == 1
        assert len((await bob.get("/api/v1/voicemails", params={"mailbox": "7001"})).json()["items"]) == 1
        assert (await bob.get("/api/v1/voicemails", params={"mailbox": "7002"})).json()["items"] == []

        gone = await bob.delete(f"/api/v1/voicemails/{vm_id}")
        assert gone.status_code == 204
        assert (await bob.get(f"/api/v1/voicemails/{vm_id}")).status_code == 404
        assert (await bob.get("/api/v1/voicemails")).json()["items"] == []


async def test_an_agent_who_owns_nothing_sees_no_voicemail_and_a_manager_sees_all(world: World) -> None:
    async with world.client("agent") as agent, world.client("dave") as dave, world.client("mia") as mia:
        vm_id = await upload(agent, tone_wav(0.5))
        assert (await dave.get("/api/v1/voicemails")).json() == {"items": [], "next": None}
        for answer in (
            await dave.get(f"/api/v1/voicemails/{vm_id}"),
            await dave.get(f"/api/v1/voicemails/{vm_id}/audio"),
            await dave.patch(f"/api/v1/voicemails/{vm_id}", json={"heard": True}),
            await dave.delete(f"/api/v1/voicemails/{vm_id}"),
        ):
            assert answer.status_code == 404, answer.text
            assert answer.json()["error"]["message"] == f"no voicemail with id {vm_id}"
        [item] = (await mia.get("/api/v1/voicemails")).json()["items"]
        assert item["id"] == vm_id and item["heard"] is False  # dave's PATCH changed nothing
        assert (await mia.get(f"/api/v1/voicemails/{vm_id}/audio")).status_code == 200


async def test_pages_go_newest_first(world: World) -> None:
    async with world.client("agent") as agent, world.client("bob") as bob:
        for n in range(3):
            ref = REFERENCE.replace("msg0000", f"msg000{n}")
            at = f"2026-12-06T10:1{n}:00+00:00"
            answer = await agent.post("/agent/v1/voicemails", json=message(reference=ref, received_at=at))
            assert answer.status_code == 200
        first = (await bob.get("/api/v1/voicemails", params={"limit": 2})).json()
        assert [i["received_at"][:16] for i in first["items"]] == ["2026-12-06T10:12", "2026-12-06T10:11"]
        rest = (await bob.get("/api/v1/voicemails", params={"limit": 2, "cursor": first["next"]})).json()
        assert [i["received_at"][:16] for i in rest["items"]] == ["2026-12-06T10:10"] and rest["next"] is None


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("get", "/api/v1/voicemails?status=unread", None, 422, "status"),
        ("get", "/api/v1/voicemails?mailbox=%20", None, 400, "mailbox is empty"),
        ("get", "/api/v1/voicemails?cursor=junk", None, 400, "cursor"),
        ("patch", "/api/v1/voicemails/{id}", {}, 422, "heard"),
        ("patch", "/api/v1/voicemails/{id}", {"heard": "maybe"}, 422, "heard"),
        ("patch", "/api/v1/voicemails/{id}", {"heard": True, "x": 1}, 422, "x"),
        ("get", "/api/v1/voicemails/0", None, 422, ""),
        ("get", "/api/v1/voicemails/99999/audio", None, 404, "no voicemail with id 99999"),
    ],
)
async def test_bad_input_gets_a_4xx_with_words(
    world: World, method: str, path: str, body: Any, status: int, words: str
) -> None:
    async with world.client("agent") as agent, world.client("bob") as bob:
        vm_id = (await agent.post("/agent/v1/voicemails", json=message())).json()["voicemail_id"]
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        answer = await bob.request(method, path.replace("{id}", str(vm_id)), **kwargs)
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        assert error["code"] and words in answer.text


async def test_bad_announcements_from_an_agent_get_a_4xx(world: World) -> None:
    async with world.client("agent") as agent, world.client("bob") as bob:
        naive = await agent.post("/agent/v1/voicemails", json=message(received_at="2026-12-06T10:12:40"))
        assert naive.status_code == 422
        half = await agent.post("/agent/v1/voicemails", json=message(size=10))
        assert half.status_code == 400 and "size and sha256" in half.json()["error"]["message"]
        unknown = await agent.post("/agent/v1/voicemails/refused", json={"reference": "x", "reason": "gone"})
        assert unknown.status_code == 404
        # A user's token is no agent's.
        assert (await bob.post("/agent/v1/voicemails", json=message())).status_code == 401
        # The agent gives up on the audio: failed, with the reason.
        await agent.post("/agent/v1/voicemails", json=message())
        refused = await agent.post(
            "/agent/v1/voicemails/refused", json={"reference": REFERENCE, "reason": "no msg0000.wav"}
        )
        assert refused.status_code == 204
        [item] = (await bob.get("/api/v1/voicemails")).json()["items"]
        assert (
            item["audio_status"] == "failed"
            and item["audio_reason"] == "the agent did not send it: no msg0000.wav"
        )


def answered_by_bob(call_id: str) -> list[CallEvent]:
    at = datetime(2026, 12, 6, 11, 0, tzinfo=UTC)
    return [
        CallStarted(
            pbx="office",
            call_id=call_id,
            at=at,
            direction=Direction.INBOUND,
            from_number=ADA,
            to_number="+14155559999",
        ),
        CallRinging(pbx="office", call_id=call_id, at=at + timedelta(seconds=1), extension="7001"),
        CallAnswered(pbx="office", call_id=call_id, at=at + timedelta(seconds=5), extension="7001"),
        CallEnded(
            pbx="office", call_id=call_id, at=at + timedelta(seconds=65), disposition=Disposition.ANSWERED
        ),
    ]


async def test_a_new_voicemail_leaves_a_task_for_the_mailboxs_user_closed_by_the_callback(
    world: World, hub: Hub
) -> None:
    async with world.client("agent") as agent, world.client("bob") as bob, world.client("dave") as dave:
        await agent.post("/agent/v1/voicemails", json=message())
        await agent.post("/agent/v1/voicemails", json=message())  # announced again: still one task
        [task] = (await bob.get("/api/v1/tasks")).json()["items"]
        assert task["kind"] == "voicemail" and task["number"] == ADA and task["assignee"] == "bob"
        assert task["contact"]["name"] == "Ada Lovelace" and task["status"] == "open"
        assert datetime.fromisoformat(task["due_at"]) == datetime(2026, 12, 6, 10, 12, 40, tzinfo=UTC)
        assert (await dave.get("/api/v1/tasks")).json()["items"] == []
        # An internal caller (no outside number) leaves a voicemail but no task.
        inner = message(reference=REFERENCE.replace("msg0000", "msg0001"), caller_number="7002")
        assert (await agent.post("/agent/v1/voicemails", json=inner)).status_code == 200
        assert len((await bob.get("/api/v1/tasks")).json()["items"]) == 1

        await hub.handle_events(answered_by_bob("cb1"))
        [done] = (await bob.get("/api/v1/tasks", params={"status": "done"})).json()["items"]
        assert done["id"] == task["id"] and done["closed_by_call_id"] is not None
        assert (await bob.get("/api/v1/tasks")).json()["items"] == []


async def test_audio_over_the_hubs_cap_is_refused_and_the_voicemail_says_why(world: World, hub: Hub) -> None:
    assert hub.voicemails is not None
    hub.voicemails.max_bytes = 1000
    async with world.client("agent") as agent, world.client("bob") as bob:
        big = await agent.post("/agent/v1/voicemails", json=message(size=5000, sha256="a" * 64))
        assert big.status_code == 413, big.text
        assert "over the hub's cap of 1000" in big.json()["error"]["message"]
        [item] = (await bob.get("/api/v1/voicemails")).json()["items"]
        assert item["audio_status"] == "failed"
        assert item["audio_reason"] == "the file has 5000 bytes, over the hub's cap of 1000"
        # The message itself is kept, and its task made.
        [task] = (await bob.get("/api/v1/tasks")).json()["items"]
        assert task["kind"] == "voicemail"
