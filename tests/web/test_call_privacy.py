"""Row-level access on every path that shows a call (issue #12 part 4): the pop's last calls,
its early version, the card a reloaded page gets, missed calls, the call log, search, exports,
pages, live calls and hang-up — each seen by an agent who owns nothing."""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from tests.conftest import add_user, api_token

from callbridge.domain.directory import ContactKind, phone_from_input
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
from callbridge.services.live import DESK_TOPIC
from callbridge.store.calls import CallFilter

ADA = "+14155550100"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def started(call_id: str, minute: int) -> CallStarted:
    return CallStarted(
        pbx="main",
        call_id=call_id,
        at=T0 + timedelta(minutes=minute),
        direction=Direction.INBOUND,
        from_number=ADA,
        to_number="+14155559999",
    )


def rings(call_id: str, minute: int, *extensions: str) -> list[CallEvent]:
    at = T0 + timedelta(minutes=minute, seconds=1)
    return [CallRinging(pbx="main", call_id=call_id, at=at, extension=e) for e in extensions]


def answered(call_id: str, minute: int, extension: str) -> list[CallEvent]:
    at = T0 + timedelta(minutes=minute)
    return [
        started(call_id, minute),
        *rings(call_id, minute, extension),
        CallAnswered(pbx="main", call_id=call_id, at=at + timedelta(seconds=5), extension=extension),
        CallEnded(
            pbx="main", call_id=call_id, at=at + timedelta(seconds=65), disposition=Disposition.ANSWERED
        ),
    ]


async def world(hub: Hub) -> dict[str, int]:
    """Bob owns Ada and took her earlier call; Alice (1001) and Dave (no phone) own nothing;
    Carol (1003) is a manager."""
    ids = {}
    for name, role in (
        ("alice", Role.AGENT),
        ("bob", Role.AGENT),
        ("carol", Role.MANAGER),
        ("dave", Role.AGENT),
    ):
        ids[name] = (await add_user(hub, name, role)).id
    async with hub.db.unit() as repos:
        for ext, name in (("1001", "alice"), ("1002", "bob"), ("1003", "carol")):
            await repos.extensions.map("main", ext, ids[name])
        acme = await repos.directory.create(ContactInput(ContactKind.COMPANY, "Acme"))
        ids["acme"] = acme
        ids["ada"] = await repos.directory.create(
            ContactInput(
                ContactKind.PERSON,
                "Ada",
                company_id=acme,
                phones=(phone_from_input(ADA, "US"),),
                owner_id=ids["bob"],
            )
        )
    await hub.ingest_batch(answered("earlier", 0, "1002"))
    async with hub.db.unit() as repos:
        (earlier,) = (await repos.calls.search(_all()))[0]
    ids["earlier"] = earlier.id
    return ids


def _all() -> CallFilter:
    return CallFilter()


def cards_by_user(messages: list[tuple[str, Any]]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for topic, payload in messages:
        if topic == DESK_TOPIC and payload["msg"]["type"] == "card":
            for user_id in payload["users"]:
                out[user_id] = payload["msg"]["card"]
    return out


async def test_each_rung_user_sees_only_their_own_last_calls(hub: Hub) -> None:
    ids = await world(hub)
    # A ring group: Alice, Bob and Carol's phones ring for Ada's next call.
    messages = await hub.ingest_batch([started("now", 5), *rings("now", 5, "1001", "1002", "1003")])
    cards = cards_by_user(messages)
    assert set(cards) == {ids["alice"], ids["bob"], ids["carol"]}
    assert cards[ids["alice"]]["recent"] == []  # Bob's call with Ada is not hers to see
    assert [r["id"] for r in cards[ids["bob"]]["recent"]] == [ids["earlier"]]
    assert [r["user"] for r in cards[ids["carol"]]["recent"]] == ["bob"]
    for card in cards.values():
        assert card["contact"]["name"] == "Ada" and card["state"] == "ringing"
    # A page opened mid-call gets the same card, with the same last calls.
    assert [c["recent"] for c in await hub.board.cards(ids["alice"])] == [[]]
    assert [[r["id"] for r in c["recent"]] for c in await hub.board.cards(ids["bob"])] == [[ids["earlier"]]]
    assert await hub.board.cards(ids["dave"]) == []


async def test_a_phone_rung_later_gets_its_own_last_calls(hub: Hub) -> None:
    ids = await world(hub)
    first = cards_by_user(await hub.ingest_batch([started("now", 5), *rings("now", 5, "1002")]))
    assert [r["id"] for r in first[ids["bob"]]["recent"]] == [ids["earlier"]]
    # The call moves on to Alice's phone (the contact is known already: only her calls are read).
    later = cards_by_user(await hub.ingest_batch(rings("now", 6, "1001")))
    assert later[ids["alice"]]["recent"] == []
    assert [r["id"] for r in later[ids["bob"]]["recent"]] == [ids["earlier"]]


async def test_the_early_pop_shows_only_the_users_own_last_calls(hub: Hub) -> None:
    ids = await world(hub)
    async with hub.bus.subscribe(DESK_TOPIC) as messages:
        hub.preview([started("early", 5), *rings("early", 5, "1001")])
        payload = await asyncio.wait_for(anext(messages), 5)
    assert payload["users"] == [ids["alice"]]
    card = payload["msg"]["card"]
    assert card["id"] is None and card["contact"]["name"] == "Ada"
    assert card["recent"] == []


async def test_a_missed_call_is_the_rung_users_to_open(hub: Hub, client: httpx.AsyncClient) -> None:
    await world(hub)
    end = CallEnded(pbx="main", call_id="now", at=T0 + timedelta(minutes=6), disposition=Disposition.MISSED)
    await hub.ingest_batch([started("now", 5), *rings("now", 5, "1001"), end])
    alice = {"authorization": f"Bearer {await api_token(hub, 'alice')}"}
    dave = {"authorization": f"Bearer {await api_token(hub, 'dave')}"}
    (note,) = (await client.get("/api/v1/notifications", headers=alice)).json()["items"]
    assert note["kind"] == "missed_call"
    # The notification's call opens for Alice (her phone rang, nobody answered) ...
    opened = await client.get(f"/api/v1/calls/{note['call_id']}", headers=alice)
    assert opened.status_code == 200 and opened.json()["disposition"] == "missed"
    listed = (await client.get("/api/v1/calls", headers=alice)).json()["items"]
    assert [c["id"] for c in listed] == [note["call_id"]]
    # ... and for nobody else who owns nothing; Dave has no such notification either.
    assert (await client.get(f"/api/v1/calls/{note['call_id']}", headers=dave)).status_code == 404
    assert (await client.get("/api/v1/notifications", headers=dave)).json()["items"] == []


async def test_an_agent_who_owns_nothing_sees_no_one_elses_call_anywhere(
    hub: Hub, client: httpx.AsyncClient
) -> None:
    ids = await world(hub)
    # A call in progress, answered by Bob, for the live views and hang-up.
    now = datetime.now(UTC)
    await hub.ingest_batch(
        [
            replace(started("live", 0), at=now),
            CallRinging(pbx="main", call_id="live", at=now, extension="1002"),
            CallAnswered(pbx="main", call_id="live", at=now, extension="1002"),
        ]
    )
    async with hub.db.unit() as repos:
        live = next(c for c in (await repos.calls.search(_all()))[0] if c.pbx_call_id == "live")
    dave = {"authorization": f"Bearer {await api_token(hub, 'dave')}"}
    html = {**dave, "accept": "text/html"}

    async def items(path: str, **params: str) -> list[Any]:
        answer = await client.get(path, params=params, headers=dave)
        assert answer.status_code == 200, answer.text
        return list(answer.json()["items"])

    # The call log, its filters and its search.
    assert await items("/api/v1/calls") == []
    assert await items("/api/v1/calls", q=ADA) == []
    assert await items("/api/v1/calls", q="Ada") == []
    assert await items("/api/v1/calls", user="bob") == []
    assert await items("/api/v1/calls", contact_id=str(ids["ada"])) == []
    assert await items("/api/v1/calls", company_id=str(ids["acme"])) == []
    # A contact's history.
    assert await items(f"/api/v1/contacts/{ids['ada']}/calls") == []
    assert await items(f"/api/v1/contacts/{ids['acme']}/calls") == []
    # Exports.
    for path in ("/api/v1/calls/export.csv", "/calls/export.csv"):
        exported = await client.get(path, headers=dave)
        assert exported.status_code == 200
        assert list(csv.DictReader(io.StringIO(exported.text))) == []
    # One call: API, page, linking, hang-up all answer as if it did not exist.
    for call_id in (ids["earlier"], live.id):
        assert (await client.get(f"/api/v1/calls/{call_id}", headers=dave)).status_code == 404
        assert (await client.get(f"/calls/{call_id}", headers=html)).status_code == 404
        put = await client.put(f"/api/v1/calls/{call_id}/contact", json={"contact_id": None}, headers=dave)
        assert put.status_code == 404
    hangup = await client.post(f"/api/v1/calls/{live.id}/hangup", headers=dave)
    assert hangup.status_code == 404 and hangup.json()["error"]["message"] == f"no call with id {live.id}"
    # Pages.
    page = await client.get("/calls", params={"q": ADA}, headers=html)
    assert page.status_code == 200 and f"/calls/{ids['earlier']}" not in page.text
    contact_page = await client.get(f"/contacts/{ids['ada']}", headers=html)
    assert contact_page.status_code == 200
    assert (
        f"/calls/{ids['earlier']}" not in contact_page.text and f"/calls/{live.id}" not in contact_page.text
    )
    # Live calls are for managers.
    assert (await client.get("/api/v1/calls/live", headers=dave)).status_code == 403
    assert (await client.get("/desk/calls", headers=html)).status_code == 403
    carol = {"authorization": f"Bearer {await api_token(hub, 'carol')}"}
    assert [c["id"] for c in (await client.get("/api/v1/calls/live", headers=carol)).json()] == [live.id]


async def test_the_last_calls_offer_the_recording_to_those_who_may_see_the_call(
    hub: Hub, client: httpx.AsyncClient
) -> None:
    ids = await world(hub)
    await hub.ingest_batch(answered("pending", 2, "1002"))  # a later call, its recording not in yet
    async with hub.db.unit() as repos:
        found, _ = await repos.calls.search(_all())
        by_key = {c.pbx_call_id: c.id for c in found}
        for key in ("earlier", "pending"):
            await repos.recordings.add_pending(by_key[key], "main", f"{key}.wav")
        (stored,) = await repos.recordings.for_call(by_key["earlier"])
        await repos.recordings.mark_ready(
            stored.id,
            storage_key="main/earlier.wav",
            size_bytes=4,
            sha256="0" * 64,
            content_type="audio/wav",
            duration_seconds=None,
        )
    (hub.settings.data_dir / "recordings" / "main").mkdir(parents=True)
    (hub.settings.data_dir / "recordings" / "main" / "earlier.wav").write_bytes(b"RIFF")
    audio_url = f"/api/v1/recordings/{stored.id}/audio"

    cards = cards_by_user(
        await hub.ingest_batch([started("now", 5), *rings("now", 5, "1001", "1002", "1003")])
    )
    for user in ("bob", "carol"):  # Ada's owner; a manager
        recent = {r["id"]: r["audio_url"] for r in cards[ids[user]]["recent"]}
        assert recent == {by_key["earlier"]: audio_url, by_key["pending"]: None}, user
    assert cards[ids["alice"]]["recent"] == []  # owns nothing: neither the call nor its audio
    # A page opened mid-call gets the same.
    (bobs,) = await hub.board.cards(ids["bob"])
    assert {r["id"]: r["audio_url"] for r in bobs["recent"]}[by_key["earlier"]] == audio_url

    # The URL plays for Bob (Range too) and is a 404 for Alice, as a recording that does not exist.
    for name, status in (("bob", 200), ("alice", 404)):
        token = await api_token(hub, name)
        answer = await client.get(audio_url, headers={"authorization": f"Bearer {token}"})
        assert answer.status_code == status, name
    assert answer.json()["error"]["code"] == "not_found"
