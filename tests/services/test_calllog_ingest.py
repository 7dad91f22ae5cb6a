"""Ingest with in-memory fakes: idempotent, order-tolerant, linked to contacts and users."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from callbridge.domain.calls import CallRecord, CallSummary
from callbridge.domain.directory import Contact, ContactKind, MatchKind, Phone
from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallStarted,
    CallTransferred,
    Direction,
    Disposition,
    Presence,
    PresenceChanged,
    TransferKind,
)
from callbridge.services.calllog import CallLink, ingest

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


class FakeCalls:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], int] = {}
        self.events_by_row: dict[int, dict[str, CallEvent]] = {}
        self.saved: dict[int, tuple[CallSummary, CallLink]] = {}
        self.links: dict[int, CallLink] = {}

    async def lock_or_create(self, pbx: str, pbx_call_id: str, at: datetime) -> int:
        return self.rows.setdefault((pbx, pbx_call_id), len(self.rows) + 1)

    async def add_event(self, call_row: int, event: CallEvent) -> bool:
        events = self.events_by_row.setdefault(call_row, {})
        if event.idempotency_key in events:
            return False
        events[event.idempotency_key] = event
        return True

    async def events(self, call_row: int) -> list[CallEvent]:
        return list(self.events_by_row.get(call_row, {}).values())

    async def record(self, call_row: int, pbx: str, call_id: str) -> CallRecord:
        return CallRecord.fold(pbx, call_id, await self.events(call_row))

    async def link(self, call_row: int) -> CallLink:
        return self.links.get(call_row, CallLink())

    async def save(self, call_row: int, summary: CallSummary, link: CallLink) -> None:
        self.saved[call_row] = (summary, link)
        self.links[call_row] = link

    async def save_many(self, items: Sequence[tuple[int, CallSummary, CallLink]]) -> None:
        for row, summary, link in items:
            await self.save(row, summary, link)


class FakeFinder:
    def __init__(self, contacts: list[Contact]) -> None:
        self.contacts = contacts
        self.asked: list[str] = []

    async def by_number_key(self, key: str) -> list[Contact]:
        self.asked.append(key)
        return [c for c in self.contacts if any(p.key == key for p in c.phones)]


class FakeExtensions:
    def __init__(self, mapping: dict[str, int]) -> None:
        self.mapping = mapping

    async def users_for(self, pbx: str, extensions: Sequence[str]) -> Mapping[str, int]:
        return {e: self.mapping[e] for e in extensions if e in self.mapping}


ACME = Contact(id=10, kind=ContactKind.COMPANY, name="Acme", phones=(Phone("x", "+14155550000"),))
ADA = Contact(
    id=11,
    kind=ContactKind.PERSON,
    name="Ada",
    company_id=10,
    company_name="Acme",
    phones=(Phone("x", "+14155550100"), Phone("y", "+14155550000")),
)


def call(call_id: str = "c1") -> list[CallEvent]:
    return [
        CallStarted(
            pbx="main",
            call_id=call_id,
            at=T0,
            direction=Direction.INBOUND,
            from_number="+14155550100",
            to_number="+14155559999",
        ),
        CallAnswered(pbx="main", call_id=call_id, at=T0 + timedelta(seconds=5), extension="1001"),
        CallTransferred(
            pbx="main",
            call_id=call_id,
            at=T0 + timedelta(seconds=20),
            transfer=TransferKind.BLIND,
            from_extension="1001",
            to="1002",
        ),
        CallEnded(
            pbx="main", call_id=call_id, at=T0 + timedelta(seconds=65), disposition=Disposition.ANSWERED
        ),
    ]


async def test_ingest_builds_a_linked_record() -> None:
    calls, finder, exts = FakeCalls(), FakeFinder([ACME, ADA]), FakeExtensions({"1001": 7, "1002": 8})
    results = [await ingest(e, calls, finder, exts, "US") for e in call()]
    assert all(r is not None for r in results)
    summary, link = calls.saved[1]
    assert summary.talk_seconds == 60
    assert summary.transferred_to == "1002"
    assert link.contact_id == 11 and link.company_id == 10
    assert link.match is MatchKind.CONTACT
    assert link.answered_by_user_id == 7
    assert link.user_ids == frozenset({7, 8})
    last = results[-1]
    assert last is not None
    payload = last.payload()
    assert payload["contact_name"] == "Ada" and payload["company_name"] == "Acme"
    assert payload["disposition"] == "answered"
    assert payload["ended_at"] == "2025-03-01T09:01:05+00:00"


async def test_duplicates_change_nothing_and_publish_nothing() -> None:
    calls, finder, exts = FakeCalls(), FakeFinder([ADA]), FakeExtensions({})
    for e in call():
        await ingest(e, calls, finder, exts, "US")
    before = calls.saved[1]
    again = [await ingest(e, calls, finder, exts, "US") for e in call()]
    assert again == [None, None, None, None]
    assert calls.saved[1] == before


async def test_order_does_not_matter() -> None:
    in_order, shuffled = FakeCalls(), FakeCalls()
    finder, exts = FakeFinder([ADA]), FakeExtensions({"1001": 7})
    for e in call():
        await ingest(e, in_order, finder, exts, "US")
    for e in reversed(call()):
        await ingest(e, shuffled, finder, exts, "US")
    assert in_order.saved[1] == shuffled.saved[1]


async def test_manual_link_survives_later_events() -> None:
    calls, finder, exts = FakeCalls(), FakeFinder([ADA]), FakeExtensions({})
    first, *rest = call()
    await ingest(first, calls, finder, exts, "US")
    calls.links[1] = CallLink(contact_id=99, match=MatchKind.CONTACT, manual=True)
    for e in rest:
        await ingest(e, calls, finder, exts, "US")
    assert calls.saved[1][1].contact_id == 99
    assert calls.saved[1][1].manual


async def test_internal_calls_are_not_looked_up_and_presence_is_ignored() -> None:
    calls, finder, exts = FakeCalls(), FakeFinder([ADA]), FakeExtensions({"1001": 7})
    start = CallStarted(
        pbx="main", call_id="i1", at=T0, direction=Direction.INTERNAL, from_number="1001", to_number="1002"
    )
    result = await ingest(start, calls, finder, exts, "US")
    assert result is not None
    assert result.link.match is MatchKind.NONE
    assert result.link.placed_by_user_id == 7
    assert finder.asked == []
    presence = PresenceChanged(pbx="main", at=T0, extension="1001", presence=Presence.AVAILABLE)
    assert await ingest(presence, calls, finder, exts, "US") is None


class FakeCreator:
    def __init__(self) -> None:
        self.made: list[tuple[str, str]] = []

    async def create_for_unknown(self, number: str, name: str) -> int:
        self.made.append((number, name))
        return 500 + len(self.made)


async def test_optional_auto_create_for_unknown_inbound_callers() -> None:
    calls, finder, exts, creator = FakeCalls(), FakeFinder([]), FakeExtensions({}), FakeCreator()
    unknown = call("u1")
    for event in unknown:
        await ingest(event, calls, finder, exts, "US", auto_create=creator)
    assert creator.made == [("+14155550100", "+14155550100")]  # once per call, not per event
    _, link = calls.saved[1]
    assert link.contact_id == 501 and link.match is MatchKind.CONTACT
    off = FakeCalls()
    for event in call("u2"):
        await ingest(event, off, finder, exts, "US")
    assert off.saved[1][1].contact_id is None
    known = FakeCreator()
    for event in call("u3"):
        await ingest(event, FakeCalls(), FakeFinder([ADA]), exts, "US", auto_create=known)
    assert known.made == []
