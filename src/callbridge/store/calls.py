"""SQL for the call log: one row per call, the events it was built from, who took part.

``call_events`` is what makes ingest idempotent and order-tolerant: an event is stored once under
its idempotency key (a unique constraint, so even two workers racing store it once), and the
``calls`` row is re-folded from all of the call's events each time one arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement, Select

from callbridge.domain.calls import CallRecord, CallSummary
from callbridge.domain.directory import ContactKind, MatchKind
from callbridge.domain.errors import InvalidInput
from callbridge.domain.events import CallEvent, Direction, Disposition, HangupSide, event_from_dict
from callbridge.domain.queues import QueueVisit, visits_from_json, visits_to_json
from callbridge.domain.users import User
from callbridge.services.calllog import CallLink
from callbridge.store.directory import contact_tags, contacts, decode_cursor, encode_cursor
from callbridge.store.tables import UtcDateTime, in_list, metadata, now, users
from callbridge.store.transcripts import transcripts

# The tables one call's record lives in (their planner statistics are refreshed as they grow).
CALL_LOG_TABLES = ("calls", "call_events", "call_users")

call_types = Table(
    "call_types",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False, default=now),
)

calls = Table(
    "calls",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pbx", String(64), nullable=False),
    Column("pbx_call_id", String(128), nullable=False),
    Column("direction", String(16), nullable=True),
    Column("from_number", String(64), nullable=False, server_default=""),
    Column("to_number", String(64), nullable=False, server_default=""),
    Column("from_name", String(200), nullable=False, server_default=""),
    Column("external_number", String(64), nullable=False, server_default="", index=True),
    Column("disposition", String(16), nullable=True),
    Column("hangup_side", String(16), nullable=False, server_default="unknown"),
    Column("answered_by_extension", String(32), nullable=False, server_default=""),
    Column("answered_by_user_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    # Who placed an outbound or internal call (migration 0007); the user column keeps the name it
    # was born with ("made by").
    Column("placed_by_extension", String(32), nullable=False, server_default=""),
    Column("made_by_user_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("started_at", UtcDateTime, nullable=False),
    Column("answered_at", UtcDateTime, nullable=True),
    Column("ended_at", UtcDateTime, nullable=True),
    Column("ring_seconds", Integer, nullable=False, server_default="0"),
    Column("talk_seconds", Integer, nullable=False, server_default="0"),
    Column("transferred_to", String(64), nullable=False, server_default=""),
    Column("recording", String(500), nullable=False, server_default=""),
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="SET NULL"), nullable=True, index=True),
    Column("company_id", Integer, ForeignKey("contacts.id", ondelete="SET NULL"), nullable=True, index=True),
    Column("match", String(16), nullable=False, server_default="none"),
    Column("manual_link", Boolean, nullable=False, server_default="0"),
    Column("updated_at", UtcDateTime, nullable=False, default=now),
    # Queues (migration 0018): the last queue the caller was in, how long they waited there and
    # how it ended; every visit (domain.queues.QueueVisit) as JSON for the queue figures.
    Column("queue", String(64), nullable=True, index=True),
    Column("queue_wait_seconds", Integer, nullable=True),
    Column("queue_outcome", String(16), nullable=True),
    Column("queue_visits", Text, nullable=True),
    # What a user wrote about the call and the type they chose from the admin's list (0019).
    Column("note", Text, nullable=False, server_default=""),
    Column("call_type", String(64), nullable=False, server_default=""),
    UniqueConstraint("pbx", "pbx_call_id", name="uq_calls_pbx_pbx_call_id"),
    Index("ix_calls_started_at_id", "started_at", "id"),
)

call_events = Table(
    "call_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("call_id", Integer, ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
    Column("idempotency_key", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("payload", JSON, nullable=False),
    UniqueConstraint("call_id", "idempotency_key", name="uq_call_events_call_id_idempotency_key"),
)

call_users = Table(
    "call_users",
    metadata,
    Column("call_id", Integer, ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    PrimaryKeyConstraint("call_id", "user_id", name="pk_call_users"),
)


@dataclass(frozen=True, slots=True)
class Ref:
    id: int
    name: str


# Not ``frozen``: a frozen dataclass sets each of its 24 fields through ``object.__setattr__``,
# which made building a page of 50 views cost more than reading them from the database. Nothing
# changes a view once read; treat it as read-only.
@dataclass(slots=True)
class CallView:
    id: int
    pbx: str
    pbx_call_id: str
    direction: Direction | None
    from_number: str
    to_number: str
    from_name: str
    external_number: str
    disposition: Disposition | None
    hangup_side: HangupSide
    answered_by_extension: str
    answered_by_user: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    ring_seconds: int
    talk_seconds: int
    contact: Ref | None
    company: Ref | None
    match: MatchKind
    transferred_to: str
    recording: str
    placed_by_extension: str = ""
    placed_by_user: str = ""
    queue_visits: tuple[QueueVisit, ...] = ()
    note: str = ""
    call_type: str = ""


@dataclass(frozen=True, slots=True)
class CallFilter:
    since: datetime | None = None
    until: datetime | None = None
    direction: Direction | None = None
    disposition: Disposition | None = None
    user_id: int | None = None
    contact_id: int | None = None
    company_id: int | None = None
    tag: str = ""
    has_recording: bool | None = None
    number_key: str = ""
    digits: str = ""
    text: str = ""
    # The user the calls are shown to: only the calls they may see (:func:`visible_calls`).
    # ``None`` for the hub's own work (ingest, the live desk's bookkeeping), never for a person.
    viewer: User | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    kind: str
    at: datetime
    payload: dict[str, Any]


_contact = contacts.alias("call_contact")
_company = contacts.alias("call_company")
_answered = users.alias("answered_user")
_made = users.alias("made_user")


# The enums by value: a dict lookup, where ``Direction(value)`` runs the Enum machinery (four
# per call, 200 per page).
_DIRECTIONS = {d.value: d for d in Direction}
_DISPOSITIONS = {d.value: d for d in Disposition}
_SIDES = {s.value: s for s in HangupSide}
_MATCHES = {m.value: m for m in MatchKind}


def _view(row: Any) -> CallView:
    # By the row's mapping: a name looked up on a Row costs about three times as much, and a
    # page of the call log reads some 1,500 of them.
    m = row._mapping
    contact_id, company_id = m["contact_id"], m["company_id"]
    contact_name, company_name = m["contact_name"], m["company_name"]
    direction, disposition = m["direction"], m["disposition"]
    return CallView(
        id=m["id"],
        pbx=m["pbx"],
        pbx_call_id=m["pbx_call_id"],
        direction=_DIRECTIONS[direction] if direction else None,
        from_number=m["from_number"],
        to_number=m["to_number"],
        from_name=m["from_name"],
        external_number=m["external_number"],
        disposition=_DISPOSITIONS[disposition] if disposition else None,
        hangup_side=_SIDES[m["hangup_side"]],
        answered_by_extension=m["answered_by_extension"],
        answered_by_user=m["answered_user_name"] or "",
        started_at=m["started_at"],
        answered_at=m["answered_at"],
        ended_at=m["ended_at"],
        ring_seconds=m["ring_seconds"],
        talk_seconds=m["talk_seconds"],
        contact=Ref(contact_id, contact_name) if contact_id and contact_name else None,
        company=Ref(company_id, company_name) if company_id and company_name else None,
        match=_MATCHES[m["match"]],
        transferred_to=m["transferred_to"],
        recording=m["recording"],
        placed_by_extension=m["placed_by_extension"],
        placed_by_user=m["made_user_name"] or "",
        queue_visits=tuple(visits_from_json(m["queue_visits"])),
        note=m["note"],
        call_type=m["call_type"],
    )


# A statement is immutable (each ``where`` makes a new one): built once, not once per page.
_CALLS_SELECT: Select[Any] = select(
    calls,
    _contact.c.name.label("contact_name"),
    _company.c.name.label("company_name"),
    _answered.c.name.label("answered_user_name"),
    _made.c.name.label("made_user_name"),
).select_from(
    calls.outerjoin(_contact, _contact.c.id == calls.c.contact_id)
    .outerjoin(_company, _company.c.id == calls.c.company_id)
    .outerjoin(_answered, _answered.c.id == calls.c.answered_by_user_id)
    .outerjoin(_made, _made.c.id == calls.c.made_by_user_id)
)

_NEWEST_FIRST = (calls.c.started_at.desc(), calls.c.id.desc())


def _select() -> Select[Any]:
    return _CALLS_SELECT


def _owned_by(user_id: int) -> Any:
    return select(contacts.c.id).where(contacts.c.owner_id == user_id)


def visible_calls(user: User) -> ColumnElement[bool] | None:
    """Which calls ``user`` may see: the one rule behind every path that shows a call (the call
    log, its export and pages, a contact's history, the live desk's pops and hang-up).

    ``None`` means every call (admins and managers). An agent sees the calls they took part in
    (``call_users``: made, answered, received by transfer, or rang at their phone and nobody
    answered) and every call of a contact or company they own. Widen it here, nowhere else."""
    if user.sees_all_calls:
        return None
    mine = select(call_users.c.call_id).where(call_users.c.user_id == user.id)
    return or_(
        calls.c.id.in_(mine),
        calls.c.contact_id.in_(_owned_by(user.id)),
        calls.c.company_id.in_(_owned_by(user.id)),
    )


def _apply_filter(stmt: Select[Any], f: CallFilter) -> Select[Any]:
    if f.since is not None:
        stmt = stmt.where(calls.c.started_at >= f.since)
    if f.until is not None:
        stmt = stmt.where(calls.c.started_at < f.until)
    if f.direction is not None:
        stmt = stmt.where(calls.c.direction == f.direction.value)
    if f.disposition is not None:
        stmt = stmt.where(calls.c.disposition == f.disposition.value)
    if f.user_id is not None:
        stmt = stmt.where(
            calls.c.id.in_(select(call_users.c.call_id).where(call_users.c.user_id == f.user_id))
        )
    if f.contact_id is not None:
        stmt = stmt.where(calls.c.contact_id == f.contact_id)
    if f.company_id is not None:
        people = select(contacts.c.id).where(contacts.c.company_id == f.company_id)
        stmt = stmt.where(
            or_(
                calls.c.company_id == f.company_id,
                calls.c.contact_id == f.company_id,
                calls.c.contact_id.in_(people),
            )
        )
    if f.tag:
        tagged = select(contact_tags.c.contact_id).where(contact_tags.c.tag_folded == f.tag.casefold())
        stmt = stmt.where(or_(calls.c.contact_id.in_(tagged), calls.c.company_id.in_(tagged)))
    if f.has_recording is True:
        stmt = stmt.where(calls.c.recording != "")
    elif f.has_recording is False:
        stmt = stmt.where(calls.c.recording == "")
    if f.number_key:
        stmt = stmt.where(
            or_(
                calls.c.external_number == f.number_key,
                calls.c.from_number == f.number_key,
                calls.c.to_number == f.number_key,
            )
        )
    elif f.digits:
        stmt = stmt.where(
            or_(
                calls.c.from_number.contains(f.digits, autoescape=True),
                calls.c.to_number.contains(f.digits, autoescape=True),
            )
        )
    elif f.text:
        folded = f.text.casefold()
        stmt = stmt.where(
            or_(
                _contact.c.name_folded.contains(folded, autoescape=True),
                _company.c.name_folded.contains(folded, autoescape=True),
                calls.c.from_name.contains(f.text, autoescape=True),
                calls.c.note.contains(f.text, autoescape=True),
                # Words said in the call: its recording's transcript.
                calls.c.id.in_(
                    select(transcripts.c.call_id).where(
                        transcripts.c.text_folded.contains(folded, autoescape=True)
                    )
                ),
            )
        )
    if f.viewer is not None:
        visible = visible_calls(f.viewer)
        if visible is not None:
            stmt = stmt.where(visible)
    return stmt


class SqlCalls:
    """The call log's store; implements ``services.calllog.CallStore``."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        # Rows read while locked in this unit of work: saves re-reading them (they cannot change).
        self._locked: dict[int, Any] = {}
        self._users: dict[int, set[int]] = {}

    def _insert_ignoring_conflicts(self, table: Table) -> Any:
        if self.session.get_bind().dialect.name == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        return sqlite.insert(table).on_conflict_do_nothing()

    # -- ingest --------------------------------------------------------------------------------------

    async def lock_or_create(self, pbx: str, pbx_call_id: str, at: datetime) -> int:
        find = select(calls).where(calls.c.pbx == pbx, calls.c.pbx_call_id == pbx_call_id).with_for_update()
        found = (await self.session.execute(find)).first()
        if found is not None:
            self._locked[found.id] = found
            return int(found.id)
        await self.session.execute(
            self._insert_ignoring_conflicts(calls).values(
                pbx=pbx, pbx_call_id=pbx_call_id, started_at=at, updated_at=now()
            )
        )
        row = (await self.session.execute(find)).one()
        self._locked[row.id] = row
        self._users[row.id] = set()  # a new call has nobody yet
        return int(row.id)

    async def add_event(self, call_row: int, event: CallEvent) -> bool:
        result = await self.session.execute(
            self._insert_ignoring_conflicts(call_events).values(
                call_id=call_row,
                idempotency_key=event.idempotency_key,
                kind=event.kind,
                at=event.at,
                payload=event.to_dict(),
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def events(self, call_row: int) -> list[CallEvent]:
        query = (
            select(call_events.c.payload).where(call_events.c.call_id == call_row).order_by(call_events.c.id)
        )
        out: list[CallEvent] = []
        for payload in (await self.session.execute(query)).scalars():
            event = event_from_dict(payload)
            if isinstance(event, CallEvent):
                out.append(event)
        return out

    async def record(self, call_row: int, pbx: str, call_id: str) -> CallRecord:
        return CallRecord.fold(pbx, call_id, await self.events(call_row))

    async def link(self, call_row: int) -> CallLink:
        row = self._locked.get(call_row)
        if row is None:
            row = (await self.session.execute(select(calls).where(calls.c.id == call_row))).one()
        ids = self._users.get(call_row)
        if ids is None:
            query = select(call_users.c.user_id).where(call_users.c.call_id == call_row)
            ids = set((await self.session.execute(query)).scalars())
            self._users[call_row] = ids
        # The names go with the link: a call's later events (answered, ended) reuse the link
        # and must not lose the contact shown for it (live calls, the pop).
        names: dict[int, str] = {}
        linked = [i for i in (row.contact_id, row.company_id) if i is not None]
        if linked:
            query = select(contacts.c.id, contacts.c.name).where(contacts.c.id.in_(linked))
            names = {r.id: r.name for r in (await self.session.execute(query)).all()}
        return CallLink(
            contact_id=row.contact_id,
            company_id=row.company_id,
            match=MatchKind(row.match),
            answered_by_user_id=row.answered_by_user_id,
            placed_by_user_id=row.made_by_user_id,
            user_ids=frozenset(ids),
            manual=bool(row.manual_link),
            number=row.external_number,
            contact_name=names.get(row.contact_id, "") if row.contact_id is not None else "",
            company_name=names.get(row.company_id, "") if row.company_id is not None else "",
        )

    @staticmethod
    def _record_values(summary: CallSummary, link: CallLink) -> dict[str, Any]:
        assert summary.started_at is not None  # a call with an event has a start
        queue = summary.queue
        return {
            "direction": summary.direction.value if summary.direction else None,
            "from_number": summary.from_number[:64],
            "to_number": summary.to_number[:64],
            "from_name": summary.from_name[:200],
            "external_number": summary.external_number[:64],
            "disposition": summary.disposition.value if summary.disposition else None,
            "hangup_side": summary.hangup_side.value,
            "answered_by_extension": summary.answered_by_extension[:32],
            "answered_by_user_id": link.answered_by_user_id,
            "placed_by_extension": summary.placed_by_extension[:32],
            "made_by_user_id": link.placed_by_user_id,
            "started_at": summary.started_at,
            "answered_at": summary.answered_at,
            "ended_at": summary.ended_at,
            "ring_seconds": summary.ring_seconds,
            "talk_seconds": summary.talk_seconds,
            "transferred_to": summary.transferred_to[:64],
            "recording": summary.recording[:500],
            "contact_id": link.contact_id,
            "company_id": link.company_id,
            "match": link.match.value,
            "manual_link": link.manual,
            "queue": queue.queue[:64] if queue else None,
            "queue_wait_seconds": queue.wait_seconds if queue else None,
            "queue_outcome": (queue.outcome.value if queue.outcome else "waiting") if queue else None,
            "queue_visits": visits_to_json(summary.queue_visits),
            "updated_at": now(),
        }

    async def save(self, call_row: int, summary: CallSummary, link: CallLink) -> None:
        await self.save_many([(call_row, summary, link)])

    async def save_many(self, items: Sequence[tuple[int, CallSummary, CallLink]]) -> None:
        """Write each call's record and its participants: one UPDATE for all the calls."""
        if not items:
            return
        from callbridge.store.analytics import SqlRollups  # it reads this module's tables

        rollups = SqlRollups(self.session)
        before = await rollups.read([row for row, _, _ in items])
        rows = [{"b_id": row, **self._record_values(summary, link)} for row, summary, link in items]
        columns = [key for key in rows[0] if key != "b_id"]
        statement = (
            update(calls)
            .where(calls.c.id == bindparam("b_id"))
            .values({name: bindparam(name) for name in columns})
        )
        await self.session.execute(statement, rows)
        new_members: list[dict[str, int]] = []
        for row, _, link in items:
            current = self._users.get(row)
            if current is None:
                query = select(call_users.c.user_id).where(call_users.c.call_id == row)
                current = set((await self.session.execute(query)).scalars())
            self._users[row] = set(link.user_ids)
            self._locked.pop(row, None)
            gone = current - link.user_ids
            if gone:
                await self.session.execute(
                    delete(call_users).where(call_users.c.call_id == row, call_users.c.user_id.in_(gone))
                )
            new_members += [{"call_id": row, "user_id": u} for u in sorted(link.user_ids - current)]
        if new_members:
            await self.session.execute(insert(call_users), new_members)
        # The analytics rollups move in the same unit of work as the rows they count.
        await rollups.changed(
            before, {r["b_id"]: (r, link.user_ids) for r, (_, _, link) in zip(rows, items, strict=True)}
        )

    # -- batched ingest: a few statements for a whole batch of events ------------------------------

    async def lock_calls(
        self, pbx: str, firsts: Sequence[tuple[str, datetime]]
    ) -> dict[str, tuple[int, CallLink]]:
        """Create the calls not stored yet (starting at their first event) and lock them all, in
        two statements; returns each call's row id and link (as ``SqlCalls.link`` reads it)."""
        if not firsts:
            return {}
        stamp = now()
        dialect = self.session.get_bind().dialect.name
        table_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        # executemany of one cached statement: a multi-VALUES insert would be compiled anew
        # for every batch size, which costs more than the database's work.
        await self.session.execute(
            table_insert(calls).on_conflict_do_nothing(),
            [{"pbx": pbx, "pbx_call_id": c, "started_at": at, "updated_at": stamp} for c, at in firsts],
        )
        # Only what a CallLink needs: decoding every column of every locked row is most of the
        # cost of this statement.
        query = (
            select(
                calls.c.id,
                calls.c.pbx_call_id,
                calls.c.contact_id,
                calls.c.company_id,
                calls.c.match,
                calls.c.answered_by_user_id,
                calls.c.made_by_user_id,
                calls.c.manual_link,
                calls.c.external_number,
                # The names go with the link: later events of a call must not lose them.
                select(contacts.c.name)
                .where(contacts.c.id == calls.c.contact_id)
                .scalar_subquery()
                .label("contact_name"),
                select(_company.c.name)
                .where(_company.c.id == calls.c.company_id)
                .scalar_subquery()
                .label("company_name"),
            )
            .where(calls.c.pbx == pbx, in_list(self.session, calls.c.pbx_call_id, [c for c, _ in firsts]))
            .order_by(calls.c.id)
            .with_for_update()
        )
        rows = (await self.session.execute(query)).all()
        users: dict[int, set[int]] = {}
        members = select(call_users.c.call_id, call_users.c.user_id).where(
            in_list(self.session, call_users.c.call_id, [r.id for r in rows])
        )
        for member in (await self.session.execute(members)).all():
            users.setdefault(int(member.call_id), set()).add(int(member.user_id))
        for row in rows:
            # save_many compares against these (read under the lock): no query per call there.
            self._users[int(row.id)] = set(users.get(int(row.id), ()))
        return {
            row.pbx_call_id: (
                int(row.id),
                CallLink(
                    contact_id=row.contact_id,
                    company_id=row.company_id,
                    match=MatchKind(row.match),
                    answered_by_user_id=row.answered_by_user_id,
                    placed_by_user_id=row.made_by_user_id,
                    user_ids=frozenset(users.get(int(row.id), ())),
                    manual=bool(row.manual_link),
                    number=row.external_number,
                    contact_name=row.contact_name or "",
                    company_name=row.company_name or "",
                ),
            )
            for row in rows
        }

    async def events_of(self, call_rows: Sequence[int]) -> dict[int, list[CallEvent]]:
        out: dict[int, list[CallEvent]] = {}
        if not call_rows:
            return out
        query = (
            select(call_events.c.call_id, call_events.c.payload)
            .where(in_list(self.session, call_events.c.call_id, call_rows))
            .order_by(call_events.c.id)
        )
        for row in (await self.session.execute(query)).all():
            event = event_from_dict(row.payload)
            if isinstance(event, CallEvent):
                out.setdefault(int(row.call_id), []).append(event)
        return out

    async def add_events(self, pairs: Sequence[tuple[int, CallEvent]]) -> set[tuple[int, str]]:
        if not pairs:
            return set()
        dialect = self.session.get_bind().dialect.name
        table_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            table_insert(call_events)
            .on_conflict_do_nothing()
            .returning(call_events.c.call_id, call_events.c.idempotency_key)
        )
        rows = [
            {
                "call_id": row,
                "idempotency_key": event.idempotency_key,
                "kind": event.kind,
                "at": event.at,
                "payload": event.to_dict(),
            }
            for row, event in pairs
        ]
        result = await self.session.execute(statement, rows)
        return {(int(r.call_id), str(r.idempotency_key)) for r in result.all()}

    # -- reading -------------------------------------------------------------------------------------

    async def set_note(self, call_id: int, note: str | None, call_type: str | None) -> None:
        values: dict[str, str] = {}
        if note is not None:
            values["note"] = note
        if call_type is not None:
            values["call_type"] = call_type
        if values:
            await self.session.execute(update(calls).where(calls.c.id == call_id).values(**values))

    async def find(self, call_id: int, viewer: User | None = None) -> CallView | None:
        """The call; with ``viewer``, only when that user may see it."""
        stmt = _apply_filter(_select().where(calls.c.id == call_id), CallFilter(viewer=viewer))
        row = (await self.session.execute(stmt)).first()
        return _view(row) if row else None

    async def search(
        self, f: CallFilter, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[CallView], str | None]:
        """Newest first, keyset-paginated on (started_at, id)."""
        stmt = _apply_filter(_select(), f)
        if cursor:
            started, last_id = decode_cursor(cursor, 2)
            try:
                started_at = datetime.fromisoformat(str(started))
            except ValueError as exc:
                raise InvalidInput("the cursor is not valid; start from the first page") from exc
            if not isinstance(last_id, int) or started_at.tzinfo is None:
                raise InvalidInput("the cursor is not valid; start from the first page")
            stmt = stmt.where(
                or_(
                    calls.c.started_at < started_at,
                    and_(calls.c.started_at == started_at, calls.c.id < last_id),
                )
            )
        stmt = stmt.order_by(*_NEWEST_FIRST).limit(limit + 1)
        rows = (await self.session.execute(stmt)).all()
        items = [_view(r) for r in rows[:limit]]
        more = len(rows) > limit
        next_cursor = (
            encode_cursor([items[-1].started_at.isoformat(), items[-1].id]) if more and items else None
        )
        return items, next_cursor

    async def count_for_pbx(self, pbx: str) -> int:
        stmt = select(func.count()).select_from(calls).where(calls.c.pbx == pbx)
        return int((await self.session.execute(stmt)).scalar_one())

    async def count_for_contact(self, contact_id: int) -> int:
        stmt = select(func.count()).select_from(calls).where(calls.c.contact_id == contact_id)
        return int((await self.session.execute(stmt)).scalar_one())

    async def timeline(self, call_id: int) -> list[StoredEvent]:
        query = (
            select(call_events.c.kind, call_events.c.at, call_events.c.payload)
            .where(call_events.c.call_id == call_id)
            .order_by(call_events.c.at, call_events.c.id)
        )
        return [StoredEvent(r.kind, r.at, dict(r.payload)) for r in (await self.session.execute(query)).all()]

    async def set_contact(self, call_id: int, contact_id: int | None) -> None:
        """A person's choice for an ambiguous (or wrong) match; ingest keeps it from now on."""
        company_id: int | None = None
        match = MatchKind.NONE
        if contact_id is not None:
            row = (
                await self.session.execute(
                    select(contacts.c.kind, contacts.c.company_id).where(contacts.c.id == contact_id)
                )
            ).first()
            if row is None:
                raise InvalidInput(f"no contact with id {contact_id}")
            if row.kind == ContactKind.COMPANY.value:
                company_id, match = contact_id, MatchKind.COMPANY
            else:
                company_id, match = row.company_id, MatchKind.CONTACT
        result = await self.session.execute(
            update(calls)
            .where(calls.c.id == call_id)
            .values(contact_id=contact_id, company_id=company_id, match=match.value, manual_link=True)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            raise InvalidInput(f"no call with id {call_id}")

    async def relink_number(
        self, external_number: str, contact_id: int | None, company_id: int | None, match: MatchKind
    ) -> int:
        """Point past calls of a number at the contact it now resolves to (not hand-linked ones)."""
        result = await self.session.execute(
            update(calls)
            .where(calls.c.external_number == external_number, calls.c.manual_link.is_(False))
            .values(contact_id=contact_id, company_id=company_id, match=match.value)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def numbers_without_contact(self, numbers: Sequence[str]) -> list[str]:
        if not numbers:
            return []
        query = select(calls.c.external_number).where(
            calls.c.external_number.in_(list(numbers)), calls.c.contact_id.is_(None)
        )
        return sorted(set((await self.session.execute(query)).scalars()))


class SqlCallTypes:
    """The call types the admin keeps (Sales, Support, …): a user picks one for a call."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def all(self) -> list[tuple[int, str]]:
        stmt = select(call_types.c.id, call_types.c.name).order_by(call_types.c.name)
        return [(r.id, r.name) for r in (await self.session.execute(stmt)).all()]

    async def add(self, name: str) -> int:
        known = {n.casefold() for _, n in await self.all()}
        if name.casefold() in known:
            raise InvalidInput(f"the call type {name!r} exists already")
        stmt = insert(call_types).values(name=name, created_at=now()).returning(call_types.c.id)
        return int((await self.session.execute(stmt)).scalar_one())

    async def remove(self, type_id: int) -> bool:
        result = await self.session.execute(delete(call_types).where(call_types.c.id == type_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def named(self, name: str) -> str | None:
        """The list's spelling of ``name`` (matched ignoring case), or ``None``."""
        for _, known in await self.all():
            if known.casefold() == name.casefold():
                return known
        return None
