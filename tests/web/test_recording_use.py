"""Recordings in use: shared links (no sign-in, expiring, revocable, plays logged), comments
pinned to a moment with @mentions on the desk, legal hold and retention purge — each path also
with an agent who owns nothing."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import add_user, api_token
from tests.web.test_call_privacy import T0, answered
from tests.web.test_recordings_api import setup_world, tone_wav, wait_recording

from callbridge.domain.events import CallEvent, CallStarted, Direction, RecordingAvailable
from callbridge.domain.recordings import mentions
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.recordings import FetchPolicy
from callbridge.store.calls import CallFilter
from callbridge.store.desk import SqlDesk
from callbridge.store.shares import recording_shares

FAST = FetchPolicy(base_delay=0.05, max_delay=0.2, no_source_delay=0.2, max_attempts=3)


def client_for(app: object, token: str | None, address: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 50000))  # type: ignore[arg-type]
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers)


async def recorded(
    hub: Hub,
    monitor: Path,
    call_id: str,
    *,
    days_ago: float = 0,
    direction: Direction = Direction.INBOUND,
    seconds: float = 1.0,
) -> int:
    """A call of bob's (1002), started ``days_ago``, recorded to a real WAV; its row id."""
    file = monitor / f"{call_id}.wav"
    file.write_bytes(tone_wav(seconds))
    shift = datetime.now(UTC) - timedelta(days=days_ago) - T0
    events: list[CallEvent] = []
    for e in answered(call_id, 0, "1002"):
        moved = dataclasses.replace(e, at=e.at + shift)
        if isinstance(moved, CallStarted):
            moved = dataclasses.replace(moved, direction=direction)
        events.append(moved)
    events.append(RecordingAvailable(pbx="main", call_id=call_id, at=events[-1].at, recording=str(file)))
    await hub.handle_events(events)
    async with hub.db.unit() as repos:
        items, _ = await repos.calls.search(CallFilter(), 500)
    return next(c.id for c in items if c.pbx_call_id == call_id)


@pytest.fixture
def monitor(tmp_path: Path) -> Path:
    path = tmp_path / "spool" / "monitor"
    path.mkdir(parents=True)
    return path


@pytest.fixture
async def clients(app: object, hub: Hub, monitor: Path) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """bob (agent, takes the calls), dave (agent, owns nothing), carol (manager), admin."""
    assert hub.fetcher is not None
    hub.fetcher.policy = FAST
    await setup_world(hub, monitor)
    await add_user(hub, "carol", Role.MANAGER)
    out = {}
    for name in ("bob", "dave", "carol", "admin"):
        out[name] = client_for(app, await api_token(hub, name))
    out["anon"] = client_for(app, None)
    yield out
    for c in out.values():
        await c.aclose()


async def ready_recording(
    hub: Hub, monitor: Path, api: httpx.AsyncClient, call_id: str, **kw: Any
) -> dict[str, Any]:
    call = await recorded(hub, monitor, call_id, **kw)
    recording = await wait_recording(api, call, "ready")
    return {"call": call, **recording}


async def test_a_shared_link_plays_without_signing_in_until_revoked_or_expired(
    clients: dict[str, httpx.AsyncClient], hub: Hub, monitor: Path
) -> None:
    bob, dave, anon = clients["bob"], clients["dave"], clients["anon"]
    rec = await ready_recording(hub, monitor, bob, "s1", seconds=2.0)
    audio = (monitor / "s1.wav").read_bytes()
    base = f"/api/v1/recordings/{rec['id']}/shares"

    # Bad input: a clear 4xx.
    for days in (0, 91, "x"):
        bad = await bob.post(base, json={"expires_in_days": days})
        assert bad.status_code in (400, 422), bad.text
        assert "error" in bad.json()
    # An agent who may not see the call: the recording does not exist for them.
    assert (await dave.post(base, json={})).status_code == 404
    assert (await dave.get(base)).status_code == 404

    made = await bob.post(base, json={})
    assert made.status_code == 201, made.text
    share = made.json()
    assert set(share) == {"id", "url", "expires_at"}
    expires = datetime.fromisoformat(share["expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    token = share["url"].rsplit("/", 1)[1]
    assert share["url"] == f"http://testserver/shared/{token}" and len(token) >= 40
    # Only a hash of the token is stored.
    async with hub.db.unit() as repos:
        stored = (await repos.session.execute(recording_shares.select())).all()
    assert [r.token_hash for r in stored] == [hashlib.sha256(token.encode()).hexdigest()]

    path = f"/shared/{token}"
    page = await anon.get(path)
    assert page.status_code == 200
    assert f'src="{path}/audio"' in page.text and 'preload="none"' in page.text
    # Nothing of the call log: no numbers, names, links to calls, nor the desk's script.
    for leak in ("+1415", "bob", "/calls", "live.js", "s1.wav", "/api/"):
        assert leak not in page.text, leak
    whole = await anon.get(f"{path}/audio", headers={"user-agent": "Tester/1.0"})
    assert whole.status_code == 200 and whole.content == audio
    part = await anon.get(f"{path}/audio", headers={"range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == audio[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(audio)}"
    first = await anon.get(f"{path}/audio", headers={"range": "bytes=0-", "user-agent": "X" * 1000})
    assert first.status_code == 206 and first.content == audio
    assert (await anon.get(f"{path}/audio", headers={"range": f"bytes={len(audio)}-"})).status_code == 416

    # Plays: the two requests from the first byte (not the seek), with where from, bounded.
    listed = (await bob.get(base)).json()
    assert [s["id"] for s in listed] == [share["id"]] and listed[0]["active"] is True
    plays = listed[0]["plays"]
    assert len(plays) == 2
    assert {p["address"] for p in plays} == {"203.0.113.7"}
    assert sorted(p["user_agent"] for p in plays) == ["Tester/1.0", "X" * 300]
    assert listed[0]["created_by"] == "bob"

    # Revoked: 410, the same page as a forged or expired link.
    assert (await dave.delete(f"{base}/{share['id']}")).status_code == 404
    assert (await bob.delete(f"{base}/999999")).status_code == 404
    assert (await bob.delete(f"{base}/{share['id']}")).status_code == 204
    gone = await anon.get(path)
    assert gone.status_code == 410 and "expired or was revoked" in gone.text
    assert (await anon.get(f"{path}/audio")).status_code == 410
    forged = await anon.get("/shared/" + "A" * 43)
    assert forged.status_code == 410 and forged.text == gone.text
    assert (await anon.get("/shared/short")).text == gone.text
    assert (await bob.get(base)).json()[0]["active"] is False

    # Expired: 410 too.
    other = (await bob.post(base, json={"expires_in_days": 1})).json()
    other_path = "/shared/" + other["url"].rsplit("/", 1)[1]
    assert (await anon.get(other_path)).status_code == 200
    async with hub.db.unit() as repos:
        await repos.session.execute(
            recording_shares.update()
            .where(recording_shares.c.id == other["id"])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert (await anon.get(other_path)).status_code == 410
    assert (await anon.get(f"{other_path}/audio")).status_code == 410


async def test_comments_pin_a_moment_and_mention_only_who_may_see_the_call(
    clients: dict[str, httpx.AsyncClient], hub: Hub, monitor: Path
) -> None:
    bob, dave, carol = clients["bob"], clients["dave"], clients["carol"]
    rec = await ready_recording(hub, monitor, bob, "m1", seconds=3.0)
    url = f"/api/v1/calls/{rec['call']}/comments"
    assert (await bob.get(url)).json() == {"items": [], "next": None}

    for bad in ({"text": ""}, {"text": "x" * 2001}, {"text": "ok", "at_seconds": -1}, {"text": "   "}):
        answer = await bob.post(url, json=bad)
        assert answer.status_code in (400, 422), (bad, answer.text)
        assert "error" in answer.json()
    # dave may not see the call: he can neither read nor write its comments.
    assert (await dave.get(url)).status_code == 404
    assert (await dave.post(url, json={"text": "hi"})).status_code == 404

    text = "Listen here @carol and @dave, and @nobody. <script>alert(1)</script>"
    made = await bob.post(url, json={"text": text, "at_seconds": 1.5})
    assert made.status_code == 201, made.text
    comment = made.json()
    assert comment["text"] == text and comment["at_seconds"] == 1.5 and comment["author"] == "bob"
    assert (await bob.get(url)).json()["items"] == [comment]

    # carol (manager) may see the call: notified; dave may not: not notified, nothing said.
    async with hub.db.unit() as repos:
        users = {n: (await repos.users.get_by_name(n)) for n in ("carol", "dave")}
        notes = {n: await SqlDesk(repos.session).notifications(u.user.id) for n, u in users.items() if u}
    assert notes["dave"] == []
    [note] = notes["carol"]
    assert note.kind == "mention" and note.call_id == rec["call"]
    assert note.title == f"bob mentioned you on call {rec['call']}"
    assert note.body["at_seconds"] == 1.5

    # The call page shows it escaped, with a seek button at 0:01.
    page = await carol.get(f"/calls/{rec['call']}", headers={"accept": "text/html"})
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and "<script>alert(1)" not in page.text
    assert 'data-seek="1.5"' in page.text and ">0:01</button>" in page.text


def test_mentions_are_found_once_and_end_at_punctuation() -> None:
    assert mentions("@alice, @bob. @alice again; mail a@b.c; @carol-") == ["alice", "bob", "carol"]
    assert mentions("no mentions here") == []


async def test_hold_is_for_managers_and_wins_over_retention(
    clients: dict[str, httpx.AsyncClient], hub: Hub, monitor: Path
) -> None:
    bob, dave, carol, admin = clients["bob"], clients["dave"], clients["carol"], clients["admin"]
    old = await ready_recording(hub, monitor, bob, "r1", days_ago=40)
    held = await ready_recording(hub, monitor, bob, "r2", days_ago=40)
    young = await ready_recording(hub, monitor, bob, "r3", days_ago=5)
    outbound = await ready_recording(hub, monitor, admin, "r4", days_ago=15, direction=Direction.OUTBOUND)

    hold = f"/api/v1/recordings/{held['id']}/hold"
    assert (await dave.post(hold)).status_code == 404  # can't see it: it does not exist
    assert (await bob.post(hold)).status_code == 403  # sees it, but agents may not hold
    answer = await carol.post(hold)
    assert answer.status_code == 200 and answer.json()["held"] is True and answer.json()["held_by"] == "carol"
    assert (await bob.get(f"/api/v1/calls/{held['call']}")).json()["recording"]["held"] is True

    rules = "/api/v1/retention-rules"
    assert (await carol.post(rules, json={"older_than_days": 30})).status_code == 403
    assert (await dave.get(rules)).status_code == 403
    for bad in ({"older_than_days": 0}, {"older_than_days": 30, "direction": "sideways"}, {}):
        assert (await admin.post(rules, json=bad)).status_code in (400, 422)
    r30 = (await admin.post(rules, json={"older_than_days": 30})).json()
    r10 = (await admin.post(rules, json={"older_than_days": 10, "direction": "outbound"})).json()
    assert r10 == {"id": r10["id"], "older_than_days": 10, "direction": "outbound", "tag": None, "pbx": None}
    assert [r["id"] for r in (await carol.get(rules)).json()] == [r30["id"], r10["id"]]

    dry = await hub.purge_recordings(dry_run=True)
    assert sorted(c.recording_id for c in dry) == sorted([old["id"], outbound["id"]])
    assert all((hub.settings.data_dir / "recordings").rglob("*.wav"))  # nothing deleted yet
    stored_before = len(list((hub.settings.data_dir / "recordings").rglob("*.wav")))
    assert stored_before == 4

    done = await hub.purge_recordings()
    reasons = {c.recording_id: c.reason for c in done}
    assert reasons == {
        old["id"]: f"retention rule {r30['id']}: older than 30 days",
        outbound["id"]: f"retention rule {r10['id']}: older than 10 days, direction outbound",
    }
    assert len(list((hub.settings.data_dir / "recordings").rglob("*.wav"))) == 2
    purged = (await bob.get(f"/api/v1/calls/{old['call']}")).json()["recording"]
    assert purged["status"] == "purged" and purged["audio_url"] is None
    assert purged["reason"] == reasons[old["id"]]
    assert (await bob.get(f"/api/v1/recordings/{old['id']}/audio")).status_code == 404
    for kept in (held, young):
        assert (await bob.get(f"/api/v1/recordings/{kept['id']}/audio")).status_code == 200
    assert await hub.purge_recordings() == []  # nothing left to purge

    # The hold lifted: the next purge takes it.
    assert (await dave.delete(hold)).status_code == 404
    assert (await bob.delete(hold)).status_code == 403
    assert (await admin.delete(hold)).json()["held"] is False
    assert [c.recording_id for c in await hub.purge_recordings()] == [held["id"]]
    assert (await admin.delete(f"{rules}/{r30['id']}")).status_code == 204
    assert (await admin.delete(f"{rules}/{r30['id']}")).status_code == 404


async def test_the_daily_purge_runs_in_the_hub(
    clients: dict[str, httpx.AsyncClient], hub: Hub, monitor: Path
) -> None:
    import asyncio

    old = await ready_recording(hub, monitor, clients["bob"], "d1", days_ago=3)
    await clients["admin"].post("/api/v1/retention-rules", json={"older_than_days": 2})
    assert hub.retention is not None
    await hub.retention.close()
    hub.retention.first_delay, hub.retention.interval = 0, 0.05
    hub.retention.start()
    async with asyncio.timeout(10):
        while True:  # the API is what is under test: poll it briefly
            answer = await clients["bob"].get(f"/api/v1/calls/{old['call']}")
            if answer.json()["recording"]["status"] == "purged":
                break
            await asyncio.sleep(0.05)
