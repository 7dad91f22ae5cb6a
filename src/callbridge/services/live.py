"""The live desk: which user sees which call, as it happens.

:class:`Desk` runs in the process that owns a PBX link (one per PBX, see
:mod:`callbridge.services.lease`). The hub hands it every call event right after ingest, in the
same unit of work, and it answers with the messages to publish after commit:

- a *card* for every user whose extension the call rang at (screen pop), following the call
  from ringing to talking to ended, with the contact, company, tags, owner and the last calls
  with that contact;
- a persisted *notification* for each of those users when the call was missed;
- the *presence* of the extensions the call touches (ringing, on a call, available again).

Messages go out on the bus topic :data:`DESK_TOPIC` addressed to user ids, so every hub worker
delivers them to the sockets it holds, whichever worker ingested the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from callbridge.bus import Payload
from callbridge.domain.calls import CallRecord
from callbridge.domain.directory import Contact
from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallRinging,
    CallStarted,
    Direction,
    Event,
    Presence,
    PresenceChanged,
)
from callbridge.domain.numbers import format_for_region, parse_number
from callbridge.services.calllog import MISSED, Ingested, look_up_link
from callbridge.services.directory import ContactFinder

log = logging.getLogger(__name__)

DESK_TOPIC = "desk"
PRESENCE_TOPIC = "presence"
RECENT_CALLS = 4
# Ended cards are forgotten after this long (they stay on screen for a short while only).
FORGET_AFTER = 120.0
# Calls whose ringing may still pop ahead of the call log (bounded: a lost end never piles up).
MAX_EARLY = 10_000
# Early pops find a ringing extension's user in a copy of the extension map this fresh (seconds);
# the call log's card always reads the database.
EXTENSIONS_TTL = 1.0


@dataclass(frozen=True, slots=True)
class RecentCall:
    id: int
    key: str  # "pbx/pbx_call_id"
    started_at: datetime
    direction: str
    disposition: str
    talk_seconds: int
    user: str
    recording_id: int | None = None  # the call's stored (ready) recording, played on the card


class DeskReads(Protocol):
    """What the desk reads to build a card."""

    async def contact(self, contact_id: int) -> Contact | None: ...

    async def user_label(self, user_id: int) -> str: ...

    async def colleague(self, pbx: str, extension: str) -> str:
        """The label of the user ``extension`` of ``pbx`` is mapped to ("" for nobody)."""
        ...

    async def recent_calls(
        self, contact_id: int, limit: int, viewers: Sequence[int]
    ) -> Mapping[int, list[RecentCall]]:
        """The contact's last calls that each of ``viewers`` (user ids) may see, newest first:
        a card's "Last calls" never shows a user a call the call log would not."""
        ...

    async def call_ended(self, pbx: str, call_id: str) -> bool:
        """Whether the call log has this call, ended."""
        ...

    async def owed(self, number: str) -> Sequence[tuple[int | None, datetime]]:
        """(assignee id, since when) of the open follow-up tasks for ``number``: a pop tells
        its user they owe the caller a call."""
        ...


class DeskStore(DeskReads, Protocol):
    """What the desk reads and writes, inside the ingest's unit of work."""

    async def users_for(self, pbx: str, extensions: Sequence[str]) -> Mapping[str, int]: ...

    async def add_notification(
        self, user_id: int, kind: str, call_id: int | None, title: str, body: dict[str, Any]
    ) -> dict[str, Any]: ...


# Opens a short read-only unit of work for a pop sent ahead of the call log.
PopLookups = Callable[[], AbstractAsyncContextManager[tuple[DeskReads, ContactFinder]]]
Publish = Callable[[Sequence[tuple[str, Payload]]], Awaitable[None]]
ExtensionMap = Callable[[], Awaitable[Mapping[tuple[str, str], int]]]


@runtime_checkable
class ExternalLinks(Protocol):
    """A desk store that also knows where a contact lives in a connected ERP (for the pop
    card's "Open in ERPNext/Odoo"); stores without ERP connectors need not."""

    async def external_links(self, contact_id: int) -> list[dict[str, str]]: ...


class PresenceBoard(Protocol):
    """The latest presence of every extension, readable from any hub worker."""

    async def set(self, pbx: str, extension: str, presence: Presence, at: datetime) -> None: ...

    async def all(self) -> dict[tuple[str, str], tuple[Presence, datetime]]: ...

    async def set_card(self, key: str, cards: Sequence[tuple[Sequence[int], dict[str, Any]]]) -> None:
        """Remember the latest card of a call for each of its users (as ``(users, body)``
        groups; none: the call is over), for a page that opens or reloads mid-call."""
        ...

    async def cards(self, user_id: int) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


class MemoryBoard:
    """One process owns every link (no Redis): presence lives in memory."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], tuple[Presence, datetime]] = {}
        self._cards: dict[str, list[tuple[list[int], dict[str, Any]]]] = {}

    async def set(self, pbx: str, extension: str, presence: Presence, at: datetime) -> None:
        self._items[(pbx, extension)] = (presence, at)

    async def all(self) -> dict[tuple[str, str], tuple[Presence, datetime]]:
        return dict(self._items)

    async def set_card(self, key: str, cards: Sequence[tuple[Sequence[int], dict[str, Any]]]) -> None:
        if not cards:
            self._cards.pop(key, None)
        else:
            self._cards[key] = [(list(users), body) for users, body in cards]

    async def cards(self, user_id: int) -> list[dict[str, Any]]:
        return [body for groups in self._cards.values() for users, body in groups if user_id in users]

    async def close(self) -> None:
        self._items.clear()
        self._cards.clear()


@dataclass
class _Card:
    pbx: str
    call_id: str
    users: dict[int, str] = field(default_factory=dict)  # user id → the extension that rang
    extensions: set[str] = field(default_factory=set)
    contact_id: int | None = -1  # -1: not looked up yet
    details: dict[str, Any] = field(default_factory=dict)
    answered_by: str = ""
    ended_at: float = 0.0
    # The call log's path has sent this card: an early pop still looking up stays silent.
    logged: bool = False
    details_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def presence_message(pbx: str, extension: str, presence: Presence, at: datetime) -> Payload:
    return {
        "type": "presence",
        "pbx": pbx,
        "extension": extension,
        "presence": presence.value,
        "at": at.isoformat(),
    }


class Desk:
    def __init__(
        self,
        board: PresenceBoard,
        *,
        can_answer: Mapping[str, bool] | None = None,
        lookups: PopLookups | None = None,
        publish: Publish | None = None,
        extension_map: ExtensionMap | None = None,
        region: str = "US",
    ) -> None:
        self.board = board
        self._cards: dict[tuple[str, str], _Card] = {}
        # Early pops (see :meth:`preview`): the events of calls not yet answered or ended.
        self._lookups = lookups
        self._publish = publish
        self._region = region
        self._early: dict[tuple[str, str], list[CallEvent]] = {}
        self._early_tasks: set[asyncio.Task[None]] = set()
        self._extension_map = extension_map
        self._extensions: Mapping[tuple[str, str], int] = {}
        self._extensions_at = -EXTENSIONS_TTL
        self._extensions_loading: asyncio.Future[None] | None = None
        # extension → the calls it takes part in, so presence falls back to "available" only
        # when its last call ended.
        self._busy: dict[tuple[str, str], set[str]] = {}
        self.can_answer = dict(can_answer or {})

    @property
    def live_cards(self) -> int:
        return len(self._cards)

    # -- presence ------------------------------------------------------------------------------

    async def presence_changed(self, event: PresenceChanged) -> Payload:
        await self.board.set(event.pbx, event.extension, event.presence, event.at)
        return presence_message(event.pbx, event.extension, event.presence, event.at)

    async def _derive_presence(
        self, pbx: str, extension: str, call_id: str, presence: Presence, at: datetime
    ) -> Payload:
        key = (pbx, extension)
        calls = self._busy.setdefault(key, set())
        if presence is Presence.AVAILABLE:
            calls.discard(call_id)
            if calls:
                return {}
            self._busy.pop(key, None)
        else:
            calls.add(call_id)
        await self.board.set(pbx, extension, presence, at)
        return presence_message(pbx, extension, presence, at)

    # -- early pops ---------------------------------------------------------------------------

    def preview(self, events: Sequence[Event]) -> None:
        """See events as they leave the PBX link, before the call log stores them.

        A ringing phone pops its user's card from here: the contact is looked up in a short read
        of its own and the card is published at once, instead of after the batch the event
        lands in has been written. The call log's card (with the call's id) follows and
        replaces it; if it is out first, the early one stays silent."""
        if self._lookups is None or self._publish is None or self._extension_map is None:
            return
        for event in events:
            if not isinstance(event, CallEvent):
                continue
            key = (event.pbx, event.call_id)
            if isinstance(event, CallStarted):
                if len(self._early) >= MAX_EARLY:
                    del self._early[next(iter(self._early))]
                self._early[key] = [event]
                continue
            seen = self._early.get(key)
            if seen is None:
                continue  # started before this process watched it: the call log's path pops it
            if isinstance(event, CallRinging) and event.extension:
                seen.append(event)
                card = self._cards.get(key)
                if card is not None and (card.logged or event.extension in card.extensions):
                    continue
                if self._extensions_fresh() and (event.pbx, event.extension) not in self._extensions:
                    continue  # nobody's phone: no pop, no lookup
                task = asyncio.create_task(self._pop_early(event, tuple(seen)), name="early-pop")
                self._early_tasks.add(task)
                task.add_done_callback(self._early_tasks.discard)
            elif isinstance(event, CallAnswered | CallEnded):
                del self._early[key]  # from here on the card follows the call log

    def _extensions_fresh(self) -> bool:
        return self._extension_map is not None and time.monotonic() - self._extensions_at < EXTENSIONS_TTL

    async def _early_user(self, pbx: str, extension: str) -> int | None:
        if not self._extensions_fresh():
            if self._extensions_loading is None:
                self._extensions_loading = asyncio.ensure_future(self._load_extensions())
            await asyncio.shield(self._extensions_loading)
        return self._extensions.get((pbx, extension))

    async def _load_extensions(self) -> None:
        assert self._extension_map is not None
        try:
            self._extensions = await self._extension_map()
            self._extensions_at = time.monotonic()
        finally:
            self._extensions_loading = None

    async def _pop_early(self, event: CallRinging, events: Sequence[CallEvent]) -> None:
        assert self._lookups is not None and self._publish is not None
        key = (event.pbx, event.call_id)
        try:
            summary = CallRecord.fold(event.pbx, event.call_id, events).summary()
            user_id = await self._early_user(event.pbx, event.extension)
            if user_id is None:
                return
            async with self._lookups() as (store, finder):
                if await store.call_ended(event.pbx, event.call_id):
                    # A replay or a resend of a call that is over: it does not ring again.
                    log.info("no early pop for call %s/%s: it has ended", event.pbx, event.call_id)
                    return
                card = self._cards.get(key)
                if card is None:
                    card = self._cards[key] = _Card(event.pbx, event.call_id)
                if card.logged:
                    return
                card.extensions.add(event.extension)
                card.users.setdefault(user_id, event.extension)
                link = await look_up_link(finder, summary.external_number, self._region)
                early = Ingested(0, summary, link, link.contact_name, link.company_name)
                await self._fill_details(card, early, store)
            if card.logged:
                return
            body = self._card_body(card, early)
            await self._publish([(DESK_TOPIC, message) for message in _card_messages(card, body)])
        except Exception:
            # The call log's path still pops the card; this one was only a head start.
            log.exception("early pop failed for call %s/%s", event.pbx, event.call_id)

    async def close(self) -> None:
        for task in list(self._early_tasks):
            task.cancel()
        for task in list(self._early_tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- calls ---------------------------------------------------------------------------------

    async def observe(
        self, event: CallEvent, changed: Ingested, store: DeskStore
    ) -> list[tuple[str, Payload]]:
        """The messages one ingested call event causes, to publish after commit."""
        key = (event.pbx, event.call_id)
        card = self._cards.get(key)
        out: list[tuple[str, Payload]] = []
        if isinstance(event, CallRinging) and event.extension:
            if card is None:
                card = self._cards[key] = _Card(event.pbx, event.call_id)
            card.extensions.add(event.extension)
            users = await store.users_for(event.pbx, [event.extension])
            for user_id in users.values():
                card.users.setdefault(user_id, event.extension)
            if changed.summary.answered_at is None and changed.summary.disposition is None:
                msg = await self._derive_presence(
                    event.pbx, event.extension, event.call_id, Presence.RINGING, event.at
                )
                if msg:
                    out.append((PRESENCE_TOPIC, msg))
        elif isinstance(event, CallAnswered) and (event.extension or changed.summary.placed_by_extension):
            # An outbound call is answered by the far end (no extension): its agent is the one
            # who placed it, and that agent is now on the call.
            talking = event.extension or changed.summary.placed_by_extension
            if card is None:
                card = self._cards[key] = _Card(event.pbx, event.call_id)
            card.answered_by = event.extension
            card.extensions.add(talking)
            if not card.users:
                # A pickup or an originated call: the phone that answered is the user's.
                users = await store.users_for(event.pbx, [talking])
                for user_id in users.values():
                    card.users.setdefault(user_id, talking)
            if changed.summary.disposition is None:
                for ext in sorted(card.extensions):
                    presence = Presence.ON_CALL if ext == talking else Presence.AVAILABLE
                    msg = await self._derive_presence(event.pbx, ext, event.call_id, presence, event.at)
                    if msg:
                        out.append((PRESENCE_TOPIC, msg))
        if card is None:
            return out
        ended = changed.summary.disposition is not None
        await self._fill_details(card, changed, store)
        body = self._card_body(card, changed)
        card.logged = True
        if card.users:
            messages = _card_messages(card, body)
            out += [(DESK_TOPIC, message) for message in messages]
            groups = [(m["users"], m["msg"]["card"]) for m in messages]
            await self.board.set_card(body["key"], [] if ended else groups)
        if ended and isinstance(event, CallEnded):
            card.ended_at = time.monotonic()
            for ext in sorted(card.extensions):
                msg = await self._derive_presence(event.pbx, ext, event.call_id, Presence.AVAILABLE, event.at)
                if msg:
                    out.append((PRESENCE_TOPIC, msg))
            if changed.summary.disposition in MISSED and changed.summary.direction is not Direction.OUTBOUND:
                for user_id in sorted(card.users):
                    note = await store.add_notification(
                        user_id,
                        "missed_call",
                        changed.id,
                        f"Missed call from {body['caller']}",
                        {
                            "number": body["number"],
                            "contact_id": body["contact"]["id"] if body["contact"] else None,
                            "contact_name": body["contact"]["name"] if body["contact"] else None,
                            "company_name": body["company"],
                            "extension": card.users[user_id],
                            "at": body["started_at"],
                        },
                    )
                    out.append(
                        (
                            DESK_TOPIC,
                            {"users": [user_id], "msg": {"type": "notification", "notification": note}},
                        )
                    )
            del self._cards[key]
        self._forget_stale()
        return out

    def _forget_stale(self) -> None:
        # Cards whose end never came (a link restart lost it) would pile up: keep a bound.
        if len(self._cards) > 10_000:
            for key in list(self._cards)[:1000]:
                del self._cards[key]

    async def _fill_details(self, card: _Card, changed: Ingested, store: DeskReads) -> None:
        # One reader at a time: an early pop and the call log's path may both be filling it.
        async with card.details_lock:
            if card.contact_id != changed.link.contact_id:
                await self._look_up_details(card, changed, store)
            # A user rung since the lookup (a ring group's next phone) gets their own last calls.
            recent: dict[int, list[dict[str, Any]]] = card.details.get("recent", {})
            missing = [u for u in sorted(card.users) if u not in recent]
            if missing and card.contact_id is not None:
                recent.update(await self._recent(card, card.contact_id, missing, store))

    async def _look_up_details(self, card: _Card, changed: Ingested, store: DeskReads) -> None:
        contact_id = changed.link.contact_id
        card.contact_id = contact_id
        details: dict[str, Any] = {"contact": None, "tags": [], "owner": None, "recent": {}, "owed": {}}
        number = changed.summary.external_number
        if number:
            owed: dict[int, str] = {}
            for assignee, since in await store.owed(number):
                if assignee is not None:
                    owed.setdefault(assignee, since.isoformat())
            details["owed"] = owed
        party = _internal_party(changed)
        if party:
            # A colleague calling (or called): shown by name and extension, never as a stranger.
            details["colleague"] = {"name": await store.colleague(card.pbx, party), "extension": party}
        if contact_id is not None:
            contact = await store.contact(contact_id)
            if contact is not None:
                details["contact"] = {"id": contact.id, "name": contact.name, "kind": contact.kind.value}
                details["company"] = contact.company_name or None
                details["tags"] = list(contact.tags)
                if contact.owner_id is not None:
                    details["owner"] = await store.user_label(contact.owner_id)
                if isinstance(store, ExternalLinks):
                    details["external"] = await store.external_links(contact_id)
                details["recent"] = await self._recent(card, contact_id, sorted(card.users), store)
        card.details = details

    @staticmethod
    async def _recent(
        card: _Card, contact_id: int, viewers: Sequence[int], store: DeskReads
    ) -> dict[int, list[dict[str, Any]]]:
        """Each viewer's "Last calls": only calls that user may see (``DeskReads.recent_calls``)."""
        if not viewers:
            return {}
        found = await store.recent_calls(contact_id, RECENT_CALLS + 1, viewers)
        this_call = f"{card.pbx}/{card.call_id}"
        return {
            user_id: [
                {
                    "id": r.id,
                    "started_at": r.started_at.isoformat(),
                    "direction": r.direction,
                    "disposition": r.disposition,
                    "talk_seconds": r.talk_seconds,
                    "user": r.user,
                    # Only calls the user may see are here, so is their audio (which checks again).
                    "audio_url": f"/api/v1/recordings/{r.recording_id}/audio" if r.recording_id else None,
                }
                for r in found.get(user_id, [])
                if r.key != this_call
            ][:RECENT_CALLS]
            for user_id in viewers
        }

    def _card_body(self, card: _Card, changed: Ingested) -> dict[str, Any]:
        s = changed.summary
        if s.disposition is not None:
            state = "ended"
        elif s.answered_at is not None:
            state = "talking"
        else:
            state = "ringing"
        number = s.external_number or (
            s.from_number if s.direction is not Direction.OUTBOUND else s.to_number
        )
        contact = card.details.get("contact")
        company = changed.company_name or card.details.get("company")
        if contact is not None and contact.get("kind") == "company":
            company = company or contact["name"]
        colleague = card.details.get("colleague")
        if colleague is not None:
            name = colleague["name"] or s.from_name
            caller = f"{name} (ext {colleague['extension']})" if name else f"ext {colleague['extension']}"
        else:
            shown = format_for_region(number, self._region) if number else ""
            caller = (contact or {}).get("name") or s.from_name or shown or "unknown"
        return {
            "key": f"{card.pbx}/{card.call_id}",
            "id": changed.id or None,  # None: an early pop, sent before the call log has the call
            "pbx": card.pbx,
            "pbx_call_id": card.call_id,
            "state": state,
            "direction": s.direction.value if s.direction else None,
            "number": number,
            # As people read it: national in the hub's region, international otherwise.
            "number_display": format_for_region(number, self._region) if number else None,
            "name": s.from_name or None,
            "caller": caller,
            "contact": contact,
            "colleague": colleague,
            "company": company,
            "company_id": changed.link.company_id,
            "match": changed.link.match.value,
            "tags": card.details.get("tags", []),
            "owner": card.details.get("owner"),
            # "Open in ERPNext/Odoo": the contact's records in connected ERPs.
            "external": card.details.get("external", []),
            "recent": [],  # per user: see _card_messages
            "owed_since": None,  # per user: when they owe the caller a call (an open task)
            "extension": ", ".join(sorted(set(card.users.values()))) or None,
            "answered_by": s.answered_by_extension or None,
            "placed_by": s.placed_by_extension or None,
            "disposition": s.disposition.value if s.disposition else None,
            "started_at": s.started_at.isoformat() if s.started_at else None,
            "answered_at": s.answered_at.isoformat() if s.answered_at else None,
            "ended_at": s.ended_at.isoformat() if s.ended_at else None,
            "ring_seconds": s.ring_seconds,
            "talk_seconds": s.talk_seconds,
            "can_answer": self.can_answer.get(card.pbx, False) and state == "ringing",
            "can_hangup": state != "ended",
            "sent_at": datetime.now(UTC).isoformat(),
        }


def _internal_party(changed: Ingested) -> str:
    """The other party's extension when the call has no outside number (an internal call)."""
    s = changed.summary
    if s.external_number:
        return ""
    party = s.to_number if s.direction is Direction.OUTBOUND else s.from_number
    return party if parse_number(party).is_extension else ""


def _card_messages(card: _Card, body: dict[str, Any]) -> list[Payload]:
    """The card for each of its users, with that user's own "Last calls"; users who see the
    same ones share a message."""
    recent: dict[int, list[dict[str, Any]]] = card.details.get("recent", {})
    # Once the caller has been talked to, the call they were owed is being (or was) paid.
    owed: dict[int, str] = {} if body["answered_at"] else card.details.get("owed", {})
    groups: dict[str, tuple[list[int], list[dict[str, Any]], str | None]] = {}
    for user_id in sorted(card.users):
        theirs = recent.get(user_id, [])
        since = owed.get(user_id)
        groups.setdefault(repr(([r["id"] for r in theirs], since)), ([], theirs, since))[0].append(user_id)
    return [
        {"users": users, "msg": {"type": "card", "card": {**body, "recent": theirs, "owed_since": since}}}
        for users, theirs, since in groups.values()
    ]
