"""Directory and call log stores on real databases (SQLite, and PostgreSQL under make test)."""

from __future__ import annotations

import asyncio
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from tests.conftest import add_user

from callbridge.domain.directory import ContactKind, MatchKind, Phone, phone_from_input
from callbridge.domain.errors import InvalidInput, NotFound
from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallStarted,
    CallTransferred,
    Direction,
    Disposition,
    RecordingAvailable,
    TransferKind,
)
from callbridge.domain.pbx import PbxKind
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.calllog import ingest
from callbridge.services.directory import ContactInput, lookup
from callbridge.store.calls import CallFilter, SqlCalls, call_users
from callbridge.store.directory import (
    ContactQuery,
    SqlDialplanTokens,
    SqlDirectory,
    SqlExtensions,
)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def phones(*raw: str) -> tuple[Phone, ...]:
    return tuple(phone_from_input(r, "US") for r in raw)


async def seed(hub: Hub) -> dict[str, int]:
    async with hub.db.session() as s:
        d = SqlDirectory(s)
        acme = await d.create(ContactInput(ContactKind.COMPANY, "Acme", phones=phones("+1 415 555 0000")))
        ada = await d.create(
            ContactInput(
                ContactKind.PERSON,
                "Ada",
                company_id=acme,
                phones=phones("(415) 555-0100", "+1 415 555 0000"),
                tags=("VIP",),
            )
        )
        bob = await d.create(
            ContactInput(ContactKind.PERSON, "Bob", company_id=acme, phones=phones("+1 415 555 0000"))
        )
        eve = await d.create(ContactInput(ContactKind.PERSON, "Eve", phones=phones("+44 20 7183 8750")))
    return {"acme": acme, "ada": ada, "bob": bob, "eve": eve}


async def test_lookup_by_number_applies_the_rules(hub: Hub) -> None:
    ids = await seed(hub)
    async with hub.db.session() as s:
        d = SqlDirectory(s)
        ada = await lookup(d, "4155550100", "US")
        assert ada.kind is MatchKind.CONTACT and ada.display_name == "Ada (Acme)"
        shared = await lookup(d, "+14155550000", "US")
        assert shared.kind is MatchKind.COMPANY and shared.company is not None
        assert shared.company.id == ids["acme"]
        uk = await lookup(d, "011 44 20 7183 8750", "US")
        assert uk.contact is not None and uk.contact.id == ids["eve"]
        egypt = await lookup(d, "+20 71838750", "US")
        assert egypt.kind is MatchKind.NONE
        assert await d.tags_of(ids["ada"]) == ["VIP"]


async def test_search_update_delete_and_pagination(hub: Hub) -> None:
    ids = await seed(hub)
    async with hub.db.session() as s:
        d = SqlDirectory(s)
        found, _ = await d.search(ContactQuery(text="ad"))
        assert [c.name for c in found] == ["Ada"]
        found, _ = await d.search(ContactQuery(number_key="+14155550000"))
        assert [c.name for c in found] == ["Acme", "Ada", "Bob"]
        found, _ = await d.search(ContactQuery(digits="8750"))
        assert [c.name for c in found] == ["Eve"]
        found, _ = await d.search(ContactQuery(tag="vip"))
        assert [c.name for c in found] == ["Ada"]
        page1, cursor = await d.search(ContactQuery(), limit=3)
        assert [c.name for c in page1] == ["Acme", "Ada", "Bob"] and cursor
        page2, end = await d.search(ContactQuery(), limit=3, cursor=cursor)
        assert [c.name for c in page2] == ["Eve"] and end is None
        with pytest.raises(InvalidInput):
            await d.search(ContactQuery(), cursor="garbage!")
        await d.update(ids["eve"], ContactInput(ContactKind.PERSON, "Eve Online", tags=("new",)))
        eve = await d.get(ids["eve"])
        assert eve.name == "Eve Online" and eve.phones == () and eve.tags == ("new",)
        with pytest.raises(InvalidInput):
            await d.update(ids["ada"], ContactInput(ContactKind.PERSON, "Ada", company_id=ids["bob"]))
        with pytest.raises(InvalidInput, match="still has people"):
            await d.update(ids["acme"], ContactInput(ContactKind.PERSON, "Acme"))
        await d.delete(ids["bob"])
        with pytest.raises(NotFound):
            await d.get(ids["bob"])
        assert dict(await d.all_tags()) == {"VIP": 1, "new": 1}


def answered(call_id: str, number: str = "+14155550100") -> list[CallEvent]:
    return [
        CallStarted(
            pbx="main",
            call_id=call_id,
            at=T0,
            direction=Direction.INBOUND,
            from_number=number,
            to_number="+1",
        ),
        CallAnswered(pbx="main", call_id=call_id, at=T0 + timedelta(seconds=4), extension="1001"),
        CallEnded(
            pbx="main", call_id=call_id, at=T0 + timedelta(seconds=64), disposition=Disposition.ANSWERED
        ),
    ]


async def feed(hub: Hub, events: list[CallEvent]) -> list[bool]:
    out = []
    for event in events:
        async with hub.db.session() as s:
            result = await ingest(event, SqlCalls(s), SqlDirectory(s), SqlExtensions(s), "US")
            out.append(result is not None)
    return out


async def test_ingest_is_idempotent_order_tolerant_and_linked(hub: Hub) -> None:
    ids = await seed(hub)
    agent = await add_user(hub, "agent1", Role.AGENT)
    async with hub.db.session() as s:
        await SqlExtensions(s).map("main", "1001", agent.id)
    events = answered("c1")
    assert await feed(hub, list(reversed(events))) == [True, True, True]
    assert await feed(hub, events) == [False, False, False]
    async with hub.db.session() as s:
        items, cursor = await SqlCalls(s).search(CallFilter())
        assert cursor is None
        (call,) = items
        assert call.disposition is Disposition.ANSWERED
        assert call.talk_seconds == 60 and call.ring_seconds == 4
        assert call.contact is not None and call.contact.id == ids["ada"]
        assert call.company is not None and call.company.name == "Acme"
        assert call.answered_by_user == "agent1"
        assert len(await SqlCalls(s).timeline(call.id)) == 3
        mine, _ = await SqlCalls(s).search(CallFilter(viewer=agent))
        assert [c.id for c in mine] == [call.id]
        stranger = replace(agent, id=agent.id + 1000)
        assert (await SqlCalls(s).search(CallFilter(viewer=stranger)))[0] == []


async def test_concurrent_duplicates_store_one_event(hub: Hub) -> None:
    event = answered("c2")[0]

    async def one() -> bool:
        async with hub.db.session() as s:
            return await ingest(event, SqlCalls(s), SqlDirectory(s), SqlExtensions(s), "US") is not None

    results = await asyncio.gather(*(one() for _ in range(4)), return_exceptions=True)
    ok = [r for r in results if r is True]
    assert len(ok) == 1, results
    async with hub.db.session() as s:
        items, _ = await SqlCalls(s).search(CallFilter())
        assert len(items) == 1


async def test_filters_and_cursor(hub: Hub) -> None:
    ids = await seed(hub)
    for n in range(5):
        start = CallStarted(
            pbx="main",
            call_id=f"f{n}",
            at=T0 + timedelta(minutes=n),
            direction=Direction.INBOUND if n % 2 else Direction.OUTBOUND,
            from_number="+442071838750" if n % 2 else "1001",
            to_number="+1" if n % 2 else "+14155550100",
        )
        await feed(hub, [start])
    async with hub.db.session() as s:
        calls = SqlCalls(s)
        page, cursor = await calls.search(CallFilter(), limit=2)
        assert [c.pbx_call_id for c in page] == ["f4", "f3"]
        page, cursor = await calls.search(CallFilter(), limit=2, cursor=cursor)
        assert [c.pbx_call_id for c in page] == ["f2", "f1"]
        page, cursor = await calls.search(CallFilter(), limit=2, cursor=cursor)
        assert [c.pbx_call_id for c in page] == ["f0"] and cursor is None
        inbound, _ = await calls.search(CallFilter(direction=Direction.INBOUND))
        assert {c.pbx_call_id for c in inbound} == {"f1", "f3"}
        eve, _ = await calls.search(CallFilter(contact_id=ids["eve"]))
        assert {c.pbx_call_id for c in eve} == {"f1", "f3"}
        acme, _ = await calls.search(CallFilter(company_id=ids["acme"]))
        assert {c.pbx_call_id for c in acme} == {"f0", "f2", "f4"}
        vip, _ = await calls.search(CallFilter(tag="VIP"))
        assert {c.pbx_call_id for c in vip} == {"f0", "f2", "f4"}
        since, _ = await calls.search(CallFilter(since=T0 + timedelta(minutes=3)))
        assert {c.pbx_call_id for c in since} == {"f3", "f4"}
        text, _ = await calls.search(CallFilter(text="eve"))
        assert {c.pbx_call_id for c in text} == {"f1", "f3"}
        rec, _ = await calls.search(CallFilter(has_recording=True))
        assert rec == []


async def test_dialplan_tokens(hub: Hub) -> None:
    async with hub.db.unit() as repos:
        await repos.pbxes.add("main", PbxKind.ASTERISK, {}, {})
    async with hub.db.session() as s:
        tokens = SqlDialplanTokens(s, hub.box)
        token = await tokens.token_for("main")
        assert await tokens.token_for("main") == token
        pbx = await tokens.pbx_for(token)
        assert pbx is not None and pbx.name == "main"
        assert await tokens.pbx_for(token + "x") is None
        rotated = await tokens.token_for("main", rotate=True)
        assert rotated != token and await tokens.pbx_for(token) is None
        with pytest.raises(NotFound):
            await tokens.token_for("nope")


async def test_hub_sink_auto_creates_unknown_callers_when_enabled(hub: Hub) -> None:
    hub.settings.auto_create_contacts = True
    start = CallStarted(
        pbx="main",
        call_id="auto1",
        at=T0,
        direction=Direction.INBOUND,
        from_number="+4930555123",
        to_number="+1",
        from_name="Klaus Kinski",
    )
    await hub.handle_event(start)
    await hub.handle_event(answered("auto1", "+4930555123")[2])
    async with hub.db.session() as s:
        (call,), _ = await SqlCalls(s).search(CallFilter())
        assert call.contact is not None and call.contact.name == "Klaus Kinski"
        contact = await SqlDirectory(s).get(call.contact.id)
        assert [p.key for p in contact.phones] == ["+4930555123"] and contact.tags == ("auto",)
        assert await SqlDirectory(s).count() == 1


def _scenario(pbx: str) -> tuple[list[CallEvent], list[CallEvent]]:
    """Two batches of a few calls: links to the directory, answers that move to an earlier
    event (a participant leaves), a transfer and a recording, duplicates within a batch and
    across batches, and calls whose first events were stored by the first batch."""

    def at(seconds: float) -> datetime:
        return T0 + timedelta(seconds=seconds)

    def started(call_id: str, number: str) -> CallStarted:
        return CallStarted(
            pbx=pbx,
            call_id=call_id,
            at=at(0),
            direction=Direction.INBOUND,
            from_number=number,
            to_number="+1",
        )

    first: list[CallEvent] = [
        *answered("c1")[:2],
        started("c2", "+44 20 7183 8750"),
        CallAnswered(pbx=pbx, call_id="c2", at=at(9), extension="1002"),
        started("c3", "(415) 555-0100"),
        CallAnswered(pbx=pbx, call_id="c3", at=at(3), extension="1001"),
        started("c4", "+16505550199"),
    ]
    first[:2] = [replace(e, pbx=pbx) for e in first[:2]]
    second: list[CallEvent] = [
        first[1],  # stored by the first batch
        replace(answered("c1")[2], pbx=pbx),
        CallAnswered(pbx=pbx, call_id="c2", at=at(5), extension="1001"),  # earlier: 1002 leaves
        CallEnded(pbx=pbx, call_id="c2", at=at(70), disposition=Disposition.ANSWERED),
        CallTransferred(
            pbx=pbx, call_id="c3", at=at(20), transfer=TransferKind.BLIND, from_extension="1001", to="1002"
        ),
        CallEnded(pbx=pbx, call_id="c3", at=at(80), disposition=Disposition.ANSWERED),
        RecordingAvailable(pbx=pbx, call_id="c3", at=at(81), recording="c3.wav"),
        RecordingAvailable(pbx=pbx, call_id="c3", at=at(81), recording="c3.wav"),  # twice in one batch
        CallEnded(pbx=pbx, call_id="c4", at=at(30), disposition=Disposition.MISSED),
    ]
    return first, second


async def _call_log(hub: Hub, pbx: str) -> dict[str, tuple[Any, ...]]:
    """Every call of ``pbx`` as the call log shows it, with its participants and event count."""
    async with hub.db.session() as s:
        store = SqlCalls(s)
        items, _ = await store.search(CallFilter(), limit=100)
        members: dict[int, set[int]] = {}
        for call_id, user_id in (await s.execute(select(call_users))).all():
            members.setdefault(call_id, set()).add(user_id)
        out = {}
        for call in items:
            if call.pbx != pbx:
                continue
            view = {f.name: getattr(call, f.name) for f in fields(call) if f.name not in ("id", "pbx")}
            out[call.pbx_call_id] = (
                tuple(sorted(view.items())),
                frozenset(members.get(call.id, set())),
                len(await store.timeline(call.id)),
            )
        return out


async def test_batch_ingest_stores_what_event_by_event_ingest_stores(hub: Hub) -> None:
    """The batch path (on PostgreSQL: array statements on the driver) against the portable
    event-by-event path: same records, links, participants and stored events."""
    ids = await seed(hub)
    one = await add_user(hub, "agent1", Role.AGENT)
    two = await add_user(hub, "agent2", Role.AGENT)
    async with hub.db.session() as s:
        for pbx in ("batch", "single"):
            await SqlExtensions(s).map(pbx, "1001", one.id)
            await SqlExtensions(s).map(pbx, "1002", two.id)
    first, second = _scenario("batch")
    published_first = await hub.ingest_batch(first)
    published_second = await hub.ingest_batch(second)
    # Only new events change a call: the event stored by the first batch and the second copy of
    # the recording publish nothing.
    assert len([p for p in published_first if p[0] == "call"]) == len(first)
    assert len([p for p in published_second if p[0] == "call"]) == len(second) - 2

    single_first, single_second = _scenario("single")
    stored = await feed(hub, [*single_first, *single_second])
    assert stored.count(True) == len(first) + len(second) - 2

    batch, single = await _call_log(hub, "batch"), await _call_log(hub, "single")
    assert batch == single
    assert set(batch) == {"c1", "c2", "c3", "c4"}
    view = {c.pbx_call_id: c for c in (await _views(hub)) if c.pbx == "batch"}
    assert view["c1"].contact is not None and view["c1"].contact.id == ids["ada"]
    assert view["c2"].contact is not None and view["c2"].contact.id == ids["eve"]
    assert view["c2"].answered_by_user == "agent1" and batch["c2"][1] == {one.id}
    assert view["c3"].transferred_to == "1002" and batch["c3"][1] == {one.id, two.id}
    assert view["c3"].recording == "c3.wav" and batch["c3"][2] == 5
    assert view["c4"].contact is None and view["c4"].disposition is Disposition.MISSED
    assert view["c1"].ended_at is not None and view["c1"].ended_at.tzinfo is not None


async def _views(hub: Hub) -> list[Any]:
    async with hub.db.session() as s:
        items, _ = await SqlCalls(s).search(CallFilter(), limit=100)
        return items
