"""The call log's batch statements on PostgreSQL, run on the driver itself.

A batch of events (an agent's frame, a drained webhook inbox) costs a handful of statements
whatever its size: every list goes to the server as an array (``unnest``), so each statement is
prepared once and no SQL is built per batch. They run on the asyncpg connection of the unit of
work, inside its transaction: what they write commits or rolls back with everything else.

Same rows, same locks and same answers as the portable statements in :mod:`callbridge.store.calls`
(which SQLite uses); only the cost differs: building and compiling SQLAlchemy statements was most
of the hub's work per batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from callbridge.domain.calls import CallSummary
from callbridge.domain.directory import Contact, ContactKind, MatchKind
from callbridge.domain.events import CallEvent, event_from_dict
from callbridge.services.calllog import CallLink
from callbridge.store.calls import SqlCalls
from callbridge.store.tables import now

_INSERT_CALLS = """
INSERT INTO calls (pbx, pbx_call_id, started_at, updated_at)
SELECT $1, t.call_id, t.started_at, $4
FROM unnest($2::varchar[], $3::timestamptz[]) AS t(call_id, started_at)
ON CONFLICT (pbx, pbx_call_id) DO NOTHING
"""

# Locked in id order (as the portable path does), with each call's participants read alongside.
_LOCK_CALLS = """
SELECT c.id, c.pbx_call_id, c.contact_id, c.company_id, c.match, c.answered_by_user_id,
       c.made_by_user_id, c.manual_link, c.external_number,
       ARRAY(SELECT u.user_id FROM call_users u WHERE u.call_id = c.id) AS user_ids,
       (SELECT n.name FROM contacts n WHERE n.id = c.contact_id) AS contact_name,
       (SELECT n.name FROM contacts n WHERE n.id = c.company_id) AS company_name
FROM calls c
WHERE c.pbx = $1 AND c.pbx_call_id = ANY($2::varchar[])
ORDER BY c.id
FOR UPDATE OF c
"""

_EVENTS_OF = """
SELECT call_id, payload::text FROM call_events WHERE call_id = ANY($1::int[]) ORDER BY id
"""

_ADD_EVENTS = """
INSERT INTO call_events (call_id, idempotency_key, kind, at, payload)
SELECT t.call_id, t.key, t.kind, t.at, t.payload::json
FROM unnest($1::int[], $2::varchar[], $3::varchar[], $4::timestamptz[], $5::text[])
     AS t(call_id, key, kind, at, payload)
ON CONFLICT (call_id, idempotency_key) DO NOTHING
RETURNING call_id, idempotency_key
"""

# The columns of a call's record (the keys of ``SqlCalls._record_values`` but its time stamp),
# each sent as one array of its PostgreSQL type.
_RECORD_COLUMNS = (
    ("direction", "varchar"),
    ("from_number", "varchar"),
    ("to_number", "varchar"),
    ("from_name", "varchar"),
    ("external_number", "varchar"),
    ("disposition", "varchar"),
    ("hangup_side", "varchar"),
    ("answered_by_extension", "varchar"),
    ("answered_by_user_id", "int"),
    ("placed_by_extension", "varchar"),
    ("made_by_user_id", "int"),
    ("started_at", "timestamptz"),
    ("answered_at", "timestamptz"),
    ("ended_at", "timestamptz"),
    ("ring_seconds", "int"),
    ("talk_seconds", "int"),
    ("transferred_to", "varchar"),
    ("recording", "varchar"),
    ("contact_id", "int"),
    ("company_id", "int"),
    ("match", "varchar"),
    ("manual_link", "bool"),
    ("queue", "varchar"),
    ("queue_wait_seconds", "int"),
    ("queue_outcome", "varchar"),
    ("queue_visits", "text"),
)
_SAVE_CALLS = (
    "UPDATE calls AS c SET "  # noqa: S608 - built once, from the constant column list above
    + ", ".join(f"{name} = v.{name}" for name, _ in _RECORD_COLUMNS)
    + f", updated_at = ${len(_RECORD_COLUMNS) + 2} FROM unnest($1::int[], "
    + ", ".join(f"${n}::{kind}[]" for n, (_, kind) in enumerate(_RECORD_COLUMNS, start=2))
    + ") AS v(id, "
    + ", ".join(name for name, _ in _RECORD_COLUMNS)
    + ") WHERE c.id = v.id"
)

_MEMBERS_OF = "SELECT call_id, user_id FROM call_users WHERE call_id = ANY($1::int[])"

_DROP_MEMBERS = """
DELETE FROM call_users AS m USING unnest($1::int[], $2::int[]) AS g(call_id, user_id)
WHERE m.call_id = g.call_id AND m.user_id = g.user_id
"""

_ADD_MEMBERS = """
INSERT INTO call_users (call_id, user_id) SELECT * FROM unnest($1::int[], $2::int[])
"""


_USERS_FOR = """
SELECT extension, user_id FROM extension_users WHERE pbx = $1 AND extension = ANY($2::varchar[])
"""

_BY_NUMBER_KEYS = """
SELECT p.number_key, c.id, c.kind, c.name, c.company_id, co.name AS company_name, c.email,
       c.owner_id, c.notes, c.external_id
FROM contact_phones p
JOIN contacts c ON c.id = p.contact_id
LEFT JOIN contacts co ON co.id = c.company_id
WHERE p.number_key = ANY($1::varchar[])
"""


class PgIngestBatch:
    """What ingest of one batch asks the database, for one unit of work on PostgreSQL: the call
    log's ``BulkEvents`` (with ``save_many``), ``ExtensionUsers`` and ``BulkContactFinder``."""

    def __init__(self, session: AsyncSession, conn: Any, begin: AsyncConnection | None = None) -> None:
        self._session = session
        self._conn = conn
        # The unit's SQLAlchemy connection while its transaction is not begun yet.
        self._begin = begin
        # Participants of the calls locked in this unit (save_many compares against them).
        self._users: dict[int, set[int]] = {}

    @classmethod
    async def of(cls, session: AsyncSession) -> PgIngestBatch:
        """On the asyncpg connection under ``session``, inside the session's transaction."""
        connection = await session.connection()
        driver: Any = (await connection.get_raw_connection()).driver_connection
        return cls(session, driver, None if driver.is_in_transaction() else connection)

    async def _execute(self, sql: str, *args: Any) -> None:
        """A statement without rows. The dialect begins the unit's transaction with the first
        statement it runs, so the unit's first one goes through it; the rest through the driver."""
        begin, self._begin = self._begin, None
        if begin is not None:
            await begin.exec_driver_sql(sql, args)
        else:
            await self._conn.execute(sql, *args)

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        begin, self._begin = self._begin, None
        if begin is not None:
            await begin.exec_driver_sql("SELECT 1")
        rows: list[Any] = await self._conn.fetch(sql, *args)
        return rows

    async def lock_calls(
        self, pbx: str, firsts: Sequence[tuple[str, datetime]]
    ) -> dict[str, tuple[int, CallLink]]:
        if not firsts:
            return {}
        ids = [c for c, _ in firsts]
        await self._execute(_INSERT_CALLS, pbx, ids, [at for _, at in firsts], now())
        out: dict[str, tuple[int, CallLink]] = {}
        for row in await self._fetch(_LOCK_CALLS, pbx, ids):
            members = frozenset(row["user_ids"])
            call_row = int(row["id"])
            self._users[call_row] = set(members)
            out[row["pbx_call_id"]] = (
                call_row,
                CallLink(
                    contact_id=row["contact_id"],
                    company_id=row["company_id"],
                    match=MatchKind(row["match"]),
                    answered_by_user_id=row["answered_by_user_id"],
                    placed_by_user_id=row["made_by_user_id"],
                    user_ids=members,
                    manual=bool(row["manual_link"]),
                    number=row["external_number"],
                    contact_name=row["contact_name"] or "",
                    company_name=row["company_name"] or "",
                ),
            )
        return out

    async def events_of(self, call_rows: Sequence[int]) -> dict[int, list[CallEvent]]:
        out: dict[int, list[CallEvent]] = {}
        if not call_rows:
            return out
        for call_row, payload in await self._fetch(_EVENTS_OF, list(call_rows)):
            event = event_from_dict(orjson.loads(payload))
            if isinstance(event, CallEvent):
                out.setdefault(int(call_row), []).append(event)
        return out

    async def add_events(self, pairs: Sequence[tuple[int, CallEvent]]) -> set[tuple[int, str]]:
        if not pairs:
            return set()
        rows = await self._fetch(
            _ADD_EVENTS,
            [row for row, _ in pairs],
            [event.idempotency_key for _, event in pairs],
            [event.kind for _, event in pairs],
            [event.at for _, event in pairs],
            [event.canonical_json for _, event in pairs],
        )
        return {(int(call_row), str(key)) for call_row, key in rows}

    async def save_many(self, items: Sequence[tuple[int, CallSummary, CallLink]]) -> None:
        """Each call's record in one UPDATE, and its participants in at most three statements."""
        if not items:
            return
        from callbridge.store.analytics import SqlRollups

        # The analytics rollups move in the same unit of work (through the session: the same
        # connection and transaction as the driver's statements).
        begin, self._begin = self._begin, None
        if begin is not None:
            await begin.exec_driver_sql("SELECT 1")
        rollups = SqlRollups(self._session)
        before = await rollups.read([row for row, _, _ in items])
        rows: list[int] = []
        columns: dict[str, list[Any]] = {name: [] for name, _ in _RECORD_COLUMNS}
        written: dict[int, tuple[dict[str, Any], frozenset[int]]] = {}
        for call_row, summary, link in items:
            rows.append(call_row)
            values = SqlCalls._record_values(summary, link)  # the same values as everywhere else
            written[call_row] = (values, link.user_ids)
            for name, column in columns.items():
                column.append(values[name])
        await self._execute(_SAVE_CALLS, rows, *columns.values(), now())
        unknown = [row for row, _, _ in items if row not in self._users]
        if unknown:
            for call_row, user_id in await self._fetch(_MEMBERS_OF, unknown):
                self._users.setdefault(int(call_row), set()).add(int(user_id))
        gone: tuple[list[int], list[int]] = ([], [])
        new: tuple[list[int], list[int]] = ([], [])
        for call_row, _, link in items:
            current = self._users.get(call_row, set())
            for user_id in sorted(current - link.user_ids):
                gone[0].append(call_row)
                gone[1].append(user_id)
            for user_id in sorted(link.user_ids - current):
                new[0].append(call_row)
                new[1].append(user_id)
            self._users[call_row] = set(link.user_ids)
        if gone[0]:
            await self._execute(_DROP_MEMBERS, *gone)
        if new[0]:
            await self._execute(_ADD_MEMBERS, *new)
        await rollups.changed(before, written)

    # -- the directory's answers a batch needs -----------------------------------------------------

    async def users_for(self, pbx: str, extensions: Sequence[str]) -> Mapping[str, int]:
        wanted = [e for e in extensions if e]
        if not wanted:
            return {}
        return {str(e): int(u) for e, u in await self._fetch(_USERS_FOR, pbx, wanted)}

    async def by_number_key(self, key: str) -> list[Contact]:
        return (await self.by_number_keys([key]))[key]

    async def by_number_keys(self, keys: Sequence[str]) -> dict[str, list[Contact]]:
        found: dict[str, list[Contact]] = {key: [] for key in keys}
        if found:
            for row in await self._fetch(_BY_NUMBER_KEYS, list(found)):
                found[row["number_key"]].append(
                    Contact(
                        id=row["id"],
                        kind=ContactKind(row["kind"]),
                        name=row["name"],
                        company_id=row["company_id"],
                        company_name=row["company_name"] or "",
                        email=row["email"] or "",
                        owner_id=row["owner_id"],
                        notes=row["notes"] or "",
                        external_id=row["external_id"] or "",
                    )
                )
        return found
