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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from callbridge.domain.calls import CallRecord, CallSummary
from callbridge.domain.directory import MatchKind
from callbridge.domain.events import CallEvent, Direction, Event
from callbridge.services.directory import ContactFinder, lookup

log = logging.getLogger(__name__)

CALL_TOPIC = "call"


@dataclass(frozen=True, slots=True)
class CallLink:
    """What the call is linked to, beyond what the PBX said."""

    contact_id: int | None = None
    company_id: int | None = None
    match: MatchKind = MatchKind.NONE
    answered_by_user_id: int | None = None
    made_by_user_id: int | None = None
    # Users who took part (made, answered or received a transfer): an agent sees these calls.
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

    async def link(self, call_row: int) -> CallLink: ...

    async def save(self, call_row: int, summary: CallSummary, link: CallLink) -> None: ...


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


async def ingest(
    event: Event,
    calls: CallStore,
    finder: ContactFinder,
    extensions: ExtensionUsers,
    region: str,
    *,
    auto_create: ContactCreator | None = None,
) -> Ingested | None:
    """Apply one event; ``None`` when it changed nothing (a duplicate, or not about a call).

    With ``auto_create``, an inbound call from a number nobody has creates a contact for it
    (named after the caller id name, else the number), once per call."""
    if not isinstance(event, CallEvent):
        return None
    row = await calls.lock_or_create(event.pbx, event.call_id, event.at)
    if not await calls.add_event(row, event):
        log.debug("duplicate event %s for call %s/%s", event.idempotency_key, event.pbx, event.call_id)
        return None
    record = CallRecord.fold(event.pbx, event.call_id, await calls.events(row))
    summary = record.summary()
    previous = await calls.link(row)
    contact_name, company_name = previous.contact_name, previous.company_name
    if previous.manual or (summary.external_number and summary.external_number == previous.number):
        contact_id, company_id, kind = previous.contact_id, previous.company_id, previous.match
    elif summary.external_number:
        match = await lookup(finder, summary.external_number, region)
        contact_id = match.contact.id if match.contact is not None else None
        company_id = match.company.id if match.company is not None else None
        kind = match.kind
        contact_name = match.contact.name if match.contact is not None else ""
        company_name = match.company.name if match.company is not None else ""
        if kind is MatchKind.NONE and auto_create is not None and summary.direction is Direction.INBOUND:
            contact_name = summary.from_name.strip() or summary.external_number
            contact_id = await auto_create.create_for_unknown(summary.external_number, contact_name)
            kind = MatchKind.CONTACT
    else:
        contact_id, company_id, kind = None, None, MatchKind.NONE
        contact_name = company_name = ""
    users = await extensions.users_for(event.pbx, summary.participants)
    answered_by = users.get(summary.answered_by_extension) if summary.answered_by_extension else None
    made_by = users.get(record.internal_extension) if record.internal_extension else None
    took_part = {
        record.internal_extension,
        summary.answered_by_extension,
        *(t.to for t in record.transfer_list),
    }
    link = CallLink(
        contact_id=contact_id,
        company_id=company_id,
        match=kind,
        answered_by_user_id=answered_by,
        made_by_user_id=made_by,
        user_ids=frozenset(users[e] for e in took_part if e in users),
        manual=previous.manual,
        number=summary.external_number,
        contact_name=contact_name,
        company_name=company_name,
    )
    await calls.save(row, summary, link)
    return Ingested(row, summary, link, contact_name, company_name)
