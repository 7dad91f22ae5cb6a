"""Call log ingest: normalized events in, one call record per call out.

Per event, in one unit of work: lock (or create) the call's row, store the event under its
idempotency key (a duplicate stops here: nothing changes, nothing is published), fold every
stored event of the call into a :class:`~callbridge.domain.calls.CallRecord` (so arrival order
does not matter), link the external number to the directory and the extensions to users, save
the flat record. The caller commits, then publishes what :func:`ingest` returned (after commit,
so a subscriber never sees a call the database does not have).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from callbridge.domain.calls import CallRecord, CallSummary
from callbridge.domain.directory import MatchKind
from callbridge.domain.errors import CallbridgeError
from callbridge.domain.events import CallEvent, Direction, Disposition, Event
from callbridge.services.directory import BulkContactFinder, ContactFinder, lookup

log = logging.getLogger(__name__)

CALL_TOPIC = "call"
# Outcomes of a call nobody took: the users whose phones rang are the ones to call back, so the
# call is theirs (it leaves each of them a missed-call notification, and they see it).
MISSED = frozenset({Disposition.MISSED, Disposition.ABANDONED, Disposition.BUSY, Disposition.VOICEMAIL})


class IngestFailed(CallbridgeError):
    """Not one event of a batch could be stored: the database is down or refusing writes."""

    code = "ingest_failed"


@dataclass(frozen=True, slots=True)
class CallLink:
    """What the call is linked to, beyond what the PBX said."""

    contact_id: int | None = None
    company_id: int | None = None
    match: MatchKind = MatchKind.NONE
    answered_by_user_id: int | None = None
    # The user of the extension that placed the call (outbound and internal calls).
    placed_by_user_id: int | None = None
    # Users who took part (placed, answered or received a transfer, or were rung for a call
    # nobody took): an agent sees these calls.
    user_ids: frozenset[int] = frozenset()
    # A person chose the contact by hand (an ambiguous number): ingest keeps their choice.
    manual: bool = False
    # The external number the contact was looked up for: the next event of the call reuses the
    # answer instead of asking the directory again.
    number: str = ""
    contact_name: str = ""
    company_name: str = ""


class CallStore(Protocol):
    async def lock_or_create(self, pbx: str, pbx_call_id: str, at: datetime) -> int:
        """The call's row id, locked for this unit of work (created when new, starting ``at``)."""
        ...

    async def add_event(self, call_row: int, event: CallEvent) -> bool:
        """Store the event; ``False`` when an event with its idempotency key is stored already."""
        ...

    async def events(self, call_row: int) -> list[CallEvent]: ...

    async def record(self, call_row: int, pbx: str, call_id: str) -> CallRecord:
        """The call's record: ``CallRecord.fold`` of its events."""
        ...

    async def link(self, call_row: int) -> CallLink: ...

    async def save(self, call_row: int, summary: CallSummary, link: CallLink) -> None: ...

    async def save_many(self, items: Sequence[tuple[int, CallSummary, CallLink]]) -> None:
        """:meth:`save` for several calls at once (one statement where the store can)."""
        ...


class ContactCreator(Protocol):
    async def create_for_unknown(self, number: str, name: str) -> int:
        """Create a person for an unknown caller; returns the new contact's id."""
        ...


class ExtensionUsers(Protocol):
    async def users_for(self, pbx: str, extensions: Sequence[str]) -> Mapping[str, int]:
        """Extension → user id for the mapped ones among ``extensions`` on ``pbx``."""
        ...


@dataclass(frozen=True, slots=True)
class Ingested:
    """One call after an event changed it: what the live desk is told."""

    id: int
    summary: CallSummary
    link: CallLink
    contact_name: str = ""
    company_name: str = ""

    def payload(self) -> dict[str, Any]:
        s = self.summary

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "pbx": s.pbx,
            "pbx_call_id": s.call_id,
            "direction": s.direction.value if s.direction else None,
            "from_number": s.from_number,
            "to_number": s.to_number,
            "from_name": s.from_name,
            "external_number": s.external_number,
            "disposition": s.disposition.value if s.disposition else None,
            "answered_by_extension": s.answered_by_extension or None,
            "answered_by_user_id": self.link.answered_by_user_id,
            "placed_by_extension": s.placed_by_extension or None,
            "placed_by_user_id": self.link.placed_by_user_id,
            "started_at": iso(s.started_at),
            "answered_at": iso(s.answered_at),
            "ended_at": iso(s.ended_at),
            "ring_seconds": s.ring_seconds,
            "talk_seconds": s.talk_seconds,
            "contact_id": self.link.contact_id,
            "contact_name": self.contact_name or None,
            "company_id": self.link.company_id,
            "company_name": self.company_name or None,
            "match": self.link.match.value,
            "transferred_to": s.transferred_to or None,
            "recording": s.recording or None,
            "complete": s.disposition is not None,
        }


async def look_up_link(finder: ContactFinder, number: str, region: str) -> CallLink:
    """What the directory says ``number`` belongs to, as a call's link (nothing for no number)."""
    if not number:
        return CallLink()
    match = await lookup(finder, number, region)
    return CallLink(
        contact_id=match.contact.id if match.contact is not None else None,
        company_id=match.company.id if match.company is not None else None,
        match=match.kind,
        number=number,
        contact_name=match.contact.name if match.contact is not None else "",
        company_name=match.company.name if match.company is not None else "",
    )


async def ingest(
    event: Event,
    calls: CallStore,
    finder: ContactFinder,
    extensions: ExtensionUsers,
    region: str,
    *,
    auto_create: ContactCreator | None = None,
) -> Ingested | None:
    """Apply one event; ``None`` when it changed nothing (a duplicate, an event stamped after
    the call ended (see :meth:`CallRecord.takes`), or not about a call).

    With ``auto_create``, an inbound call from a number nobody has creates a contact for it
    (named after the caller id name, else the number), once per call."""
    if not isinstance(event, CallEvent):
        return None
    row = await calls.lock_or_create(event.pbx, event.call_id, event.at)
    if not (await calls.record(row, event.pbx, event.call_id)).takes(event):
        log.info(
            "%s for call %s/%s dropped: stamped after the call ended (a replay or a resend)",
            event.kind,
            event.pbx,
            event.call_id,
        )
        return None
    if not await calls.add_event(row, event):
        log.debug("duplicate event %s for call %s/%s", event.idempotency_key, event.pbx, event.call_id)
        return None
    record = await calls.record(row, event.pbx, event.call_id)
    summary = record.summary()
    previous = await calls.link(row)
    contact_name, company_name = previous.contact_name, previous.company_name
    if previous.manual or (summary.external_number and summary.external_number == previous.number):
        contact_id, company_id, kind = previous.contact_id, previous.company_id, previous.match
    elif summary.external_number:
        found = await look_up_link(finder, summary.external_number, region)
        contact_id, company_id, kind = found.contact_id, found.company_id, found.match
        contact_name, company_name = found.contact_name, found.company_name
        if kind is MatchKind.NONE and auto_create is not None and summary.direction is Direction.INBOUND:
            contact_name = summary.from_name.strip() or summary.external_number
            contact_id = await auto_create.create_for_unknown(summary.external_number, contact_name)
            kind = MatchKind.CONTACT
    else:
        contact_id, company_id, kind = None, None, MatchKind.NONE
        contact_name = company_name = ""
    users = await extensions.users_for(event.pbx, summary.participants)
    answered_by = users.get(summary.answered_by_extension) if summary.answered_by_extension else None
    placed_by = users.get(summary.placed_by_extension) if summary.placed_by_extension else None
    took_part = {
        record.internal_extension,
        summary.placed_by_extension,
        summary.answered_by_extension,
        *(t.to for t in record.transfer_list),
    }
    if summary.disposition in MISSED and summary.direction is not Direction.OUTBOUND:
        took_part.update(record.rang_extensions)
    link = CallLink(
        contact_id=contact_id,
        company_id=company_id,
        match=kind,
        answered_by_user_id=answered_by,
        placed_by_user_id=placed_by,
        user_ids=frozenset(users[e] for e in took_part if e in users),
        manual=previous.manual,
        number=summary.external_number,
        contact_name=contact_name,
        company_name=company_name,
    )
    await calls.save(row, summary, link)
    return Ingested(row, summary, link, contact_name, company_name)


# -- batched ingest ------------------------------------------------------------------------------


class BulkEvents(Protocol):
    async def lock_calls(
        self, pbx: str, firsts: Sequence[tuple[str, datetime]]
    ) -> Mapping[str, tuple[int, CallLink]]:
        """Create missing calls (starting at the time given), lock all; their row ids and links."""
        ...

    async def events_of(self, call_rows: Sequence[int]) -> Mapping[int, Sequence[CallEvent]]:
        """The stored events of each call row, in the order they were stored."""
        ...

    async def add_events(self, pairs: Sequence[tuple[int, CallEvent]]) -> set[tuple[int, str]]:
        """Store the events (duplicates ignored); the (call row, idempotency key) of new ones."""
        ...

    async def save_many(self, items: Sequence[tuple[int, CallSummary, CallLink]]) -> None:
        """Write the records of calls locked by :meth:`lock_calls` (``CallStore.save_many``)."""
        ...


@dataclass(frozen=True, slots=True)
class BatchStores:
    """What ingest of a batch reads and writes in one unit of work, as statements that each
    take the whole batch (see ``Repos.batch_stores``)."""

    calls: BulkEvents
    extensions: ExtensionUsers
    directory: BulkContactFinder


class BatchedCalls:
    """A :class:`~callbridge.services.calllog.CallStore` over another one, for a batch of events
    applied in one unit of work: each call's row, events and link are read once, and its record
    is written once, at :meth:`flush` (before the commit). Every event is still stored, and a
    duplicate is still refused by the store. Ingest's logic runs unchanged, event by event.
    """

    def __init__(self, calls: CallStore, bulk: BulkEvents | None = None) -> None:
        self._calls = calls
        self._bulk = bulk
        self._rows: dict[tuple[str, str], int] = {}
        self._events: dict[int, list[CallEvent]] = {}
        self._links: dict[int, CallLink] = {}
        self._pending: dict[int, tuple[CallSummary, CallLink]] = {}
        self._added: set[tuple[int, str]] | None = None
        # row → (how many of its events are folded in, the record so far)
        self._records: dict[int, tuple[int, CallRecord]] = {}

    async def prefetch(self, events: Sequence[CallEvent]) -> None:
        """Lock every call of ``events``, read their stored events and store the new ones, in a
        few statements for the whole batch instead of several per event."""
        if self._bulk is None:
            return
        firsts: dict[tuple[str, str], datetime] = {}
        for event in events:
            firsts.setdefault((event.pbx, event.call_id), event.at)
        for pbx in {p for p, _ in firsts}:
            wanted = [(c, at) for (p, c), at in firsts.items() if p == pbx and (p, c) not in self._rows]
            for call_id, (row, link) in (await self._bulk.lock_calls(pbx, wanted)).items():
                self._rows[(pbx, call_id)] = row
                self._links[row] = link
        rows = sorted(set(self._rows.values()))
        self._records.clear()
        self._events.update({row: list(found) for row, found in (await self._bulk.events_of(rows)).items()})
        for row in rows:
            self._events.setdefault(row, [])
        # What ingest will refuse (stamped after the call ended, see CallRecord.takes) is not
        # stored either: a later fold of the stored events must not take it in.
        records: dict[int, CallRecord] = {}
        pairs: list[tuple[int, CallEvent]] = []
        for e in events:
            row = self._rows[(e.pbx, e.call_id)]
            record = records.get(row)
            if record is None:
                stored = self._events[row]
                record = CallRecord.fold(e.pbx, e.call_id, stored)
                self._records[row] = (len(stored), record)
            if record.takes(e):
                records[row] = record.apply(e)
                pairs.append((row, e))
            else:
                records[row] = record
        self._added = await self._bulk.add_events(pairs)

    async def lock_or_create(self, pbx: str, pbx_call_id: str, at: datetime) -> int:
        key = (pbx, pbx_call_id)
        row = self._rows.get(key)
        if row is None:
            row = await self._calls.lock_or_create(pbx, pbx_call_id, at)
            self._rows[key] = row
        return row

    async def add_event(self, call_row: int, event: CallEvent) -> bool:
        if self._added is not None and call_row in self._events:
            key = (call_row, event.idempotency_key)
            added = key in self._added
            self._added.discard(key)  # the same event twice in one batch: the second is a duplicate
            if added:
                self._events[call_row].append(event)
            return added
        added = await self._calls.add_event(call_row, event)
        if added and call_row in self._events:
            self._events[call_row].append(event)
        return added

    async def events(self, call_row: int) -> list[CallEvent]:
        cached = self._events.get(call_row)
        if cached is None:
            cached = list(await self._calls.events(call_row))
            self._events[call_row] = cached
        return list(cached)

    async def record(self, call_row: int, pbx: str, call_id: str) -> CallRecord:
        """``CallRecord.fold`` of the call's events, folding only those added since the last
        time (a fold does not depend on order, so this is the same record)."""
        if call_row not in self._events:
            await self.events(call_row)
        events = self._events[call_row]
        done, record = self._records.get(call_row, (0, CallRecord.new(pbx, call_id)))
        for event in events[done:]:
            record = record.apply(event)
        self._records[call_row] = (len(events), record)
        return record

    async def link(self, call_row: int) -> CallLink:
        cached = self._links.get(call_row)
        if cached is None:
            cached = await self._calls.link(call_row)
            self._links[call_row] = cached
        return cached

    def known_events(self) -> Iterator[CallEvent]:
        """Every event of the prefetched calls: stored before and new in this batch."""
        for found in self._events.values():
            yield from found

    async def save(self, call_row: int, summary: CallSummary, link: CallLink) -> None:
        self._links[call_row] = link
        self._pending[call_row] = (summary, link)

    async def save_many(self, items: Sequence[tuple[int, CallSummary, CallLink]]) -> None:
        for row, summary, link in items:
            await self.save(row, summary, link)

    async def flush(self) -> None:
        store = self._bulk if self._bulk is not None else self._calls
        await store.save_many([(row, summary, link) for row, (summary, link) in self._pending.items()])
        self._pending.clear()


class CachedExtensions:
    """Extension → user lookups remembered for one batch."""

    def __init__(self, extensions: ExtensionUsers) -> None:
        self._extensions = extensions
        self._known: dict[tuple[str, tuple[str, ...]], Mapping[str, int]] = {}
        # pbx → (extensions asked about in one go by prefetch, the mapped ones among them)
        self._prefetched: dict[str, tuple[set[str], Mapping[str, int]]] = {}

    async def prefetch(self, events: Iterable[CallEvent]) -> None:
        """Look up, in one statement per PBX, every extension ``events`` name; a call whose
        participants are all among them is then answered without asking the store."""
        wanted: dict[str, set[str]] = {}
        for event in events:
            names = wanted.setdefault(event.pbx, set())
            for field in _EXTENSION_FIELDS:
                value = getattr(event, field, None)
                if isinstance(value, str) and value and not value.startswith("+"):
                    names.add(value)
        for pbx, names in wanted.items():
            if names:
                self._prefetched[pbx] = (names, await self._extensions.users_for(pbx, sorted(names)))

    async def users_for(self, pbx: str, extensions: Sequence[str]) -> Mapping[str, int]:
        prefetched = self._prefetched.get(pbx)
        if prefetched is not None:
            asked, mapped = prefetched
            if all(e in asked for e in extensions if e):
                return {e: mapped[e] for e in extensions if e in mapped}
        key = (pbx, tuple(sorted(extensions)))
        found = self._known.get(key)
        if found is None:
            found = await self._extensions.users_for(pbx, extensions)
            self._known[key] = found
        return found


# Event fields that may hold an extension (CallRecord.participants draws from these).
_EXTENSION_FIELDS = (
    "from_number",
    "to_number",
    "placed_by",
    "extension",
    "answered_by",
    "from_extension",
    "to",
)
